"""Progress of a reproduce run on stderr: one bar over every task, a step bar for the images being generated, and
the `vqclip reproduce: ...` message lines."""

from __future__ import annotations

import sys

from .options import PROG


def say(text: str) -> None:
    """A progress or status message on stderr, under the command's name."""
    print(f"{PROG}: {text}", file=sys.stderr)


class Progress:
    """One bar over the whole run (tasks: photos, images to generate, images to OCR) above a per-image step bar."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.tqdm, self.quiet = tqdm, quiet
        self.overall = tqdm(total=0, desc=PROG, unit="task", position=0, disable=quiet, dynamic_ncols=True)
        self.job = None

    def add(self, n: int) -> None:
        self.overall.total += n
        self.overall.refresh()

    def stage(self, name: str) -> None:
        self.overall.set_description(f"{PROG}: {name}")

    def advance(self, n: int = 1) -> None:
        self.overall.update(n)

    # BatchHooks
    def on_job_start(self, job, settings) -> None:
        if self.job is None:  # a group of images starts together: one step bar for the group
            self.job = self.tqdm(total=settings.steps, desc=job.id, unit="step", position=1, leave=False,
                                 disable=self.quiet, dynamic_ncols=True)

    def on_step(self, info) -> None:
        if self.job is not None:  # the loop may report every few steps (every 10 on a GPU)
            self.job.update(max(0, info.step - self.job.n))

    def on_job_end(self, job, outcome, line) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
        if outcome != "done":
            self.advance(1)
        if outcome == "failed":
            self.tqdm.write(f"{PROG}: image {job.id} failed: {line.get('error') if line else ''}", file=sys.stderr)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        self.overall.close()


class CountingReader:
    """An OCR reader that moves the overall bar by the images it reads."""

    def __init__(self, reader, progress: Progress):
        self.reader, self.progress, self.key, self.count = reader, progress, reader.key, 0

    def read(self, images):
        out = self.reader.read(images)
        self.count += len(images)
        self.progress.advance(len(images))
        return out
