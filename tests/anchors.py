"""Re-statements of the recipes' anchors, written for the tests from reading their code (not vqclip's functions):

- `notebook_*`: Crowson's codebook-sampling notebook (EleutherAI/vqgan-clip, "VQGAN+CLIP (codebook sampling
  method)"), the setup the paper's generation numbers came from;
- `nerdyrodent_*`: nerdyrodent/VQGAN-CLIP generate.py with its defaults (cut method `latest`).

The anchors draw from torch's global RNG. The notebook is re-stated with its own seeding (`torch.manual_seed`, then
the global RNG, under `fork_rng`), which the paper recipe follows; nerdyrodent's cutouts run under a seed drawn per
step from an explicit generator, as the nerdyrodent recipe reseeds them, so a test can give the re-statement and
vqclip the same random numbers. The models (CLIP's image tower with its normalisation,
the VQGAN's decoder mapped to [0, 1]) are the adapters under test, called as the anchors call theirs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------- shared pieces
class _Replace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, forward_value, backward_value):
        ctx.shape = backward_value.shape
        return forward_value

    @staticmethod
    def backward(ctx, grad):
        return None, grad.sum_to_size(ctx.shape)


class _Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def prompt_term(image_embeds, target, weight=1.0, stop=-math.inf):
    """The anchors' `Prompt.forward`: mean signed spherical distance, gradient cut below `stop`."""
    a = F.normalize(image_embeds.unsqueeze(1), dim=2)
    b = F.normalize(target.unsqueeze(0), dim=2)
    dists = a.sub(b).norm(dim=2).div(2).arcsin().pow(2).mul(2) * math.copysign(1, weight)
    return abs(weight) * _Replace.apply(dists, torch.maximum(dists, torch.full_like(dists, stop))).mean()


# ---------------------------------------------------------------------------------------------- the notebook
def _lanczos_window(x, a=2):
    sinc = lambda t: torch.where(t != 0, torch.sin(math.pi * t) / (math.pi * t), t.new_ones([]))  # noqa: E731
    out = torch.where(torch.logical_and(-a < x, x < a), sinc(x) * sinc(x / a), x.new_zeros([]))
    return out / out.sum()


def _ramp(ratio, width):
    n = math.ceil(width / ratio + 1)
    positions = torch.empty([n])
    value = 0
    for i in range(n):
        positions[i] = value
        value += ratio
    return torch.cat([-positions[1:].flip([0]), positions])[1:-1]


def notebook_resample(x, size):
    """Lanczos-2 prefilter along each shrinking axis (reflect padding), then bicubic with align_corners."""
    n, c, h, w = x.shape
    dh, dw = size
    x = x.view(n * c, 1, h, w)
    if dh < h:
        k = _lanczos_window(_ramp(dh / h, 2)).to(x.device, x.dtype)
        p = (k.shape[0] - 1) // 2
        x = F.conv2d(F.pad(x, (0, 0, p, p), "reflect"), k[None, None, :, None])
    if dw < w:
        k = _lanczos_window(_ramp(dw / w, 2)).to(x.device, x.dtype)
        p = (k.shape[0] - 1) // 2
        x = F.conv2d(F.pad(x, (p, p, 0, 0), "reflect"), k[None, None, None, :])
    return F.interpolate(x.view(n, c, h, w), size, mode="bicubic", align_corners=True)


def notebook_cutouts(image, cut_size, cutn, cut_pow, gen=None):
    """The notebook's MakeCutouts.forward on one image: per cutout a side, an x and a y offset, one at a time (from
    `gen`, or from torch's global RNG as the notebook draws them)."""
    side_y, side_x = image.shape[2:4]
    max_size, min_size = min(side_x, side_y), min(side_x, side_y, cut_size)
    cutouts = []
    for _ in range(cutn):
        size = int(torch.rand([], generator=gen) ** cut_pow * (max_size - min_size) + min_size)
        ox = torch.randint(0, side_x - size + 1, (), generator=gen)
        oy = torch.randint(0, side_y - size + 1, (), generator=gen)
        cutouts.append(notebook_resample(image[:, :, oy:oy + size, ox:ox + size], (cut_size, cut_size)))
    return _Clamp.apply(torch.cat(cutouts), 0, 1)


def notebook_run(clip, vqgan, target, *, size, steps, cutn, seed, lr=0.05, cut_pow=1.0, image_prompt=None,
                 image_weight=1.0):
    """The notebook's run (its seeding, ascend_txt, train) for one text target and optionally one image prompt
    (a (1, 3, H, W) tensor, already sized as its resize_image sizes it, with its weight), on the CPU.

    Its seeding: `torch.manual_seed(seed)`, then every draw from torch's global RNG in the notebook's order: the
    standard normal logits, the image prompt's cutouts, then per step the token samples (one multinomial) and the
    step's cutouts. (On CUDA its logits and samples come from the GPU's generator, seeded with the same seed, and
    its cutouts from the CPU's.) The global RNG is left as it was. Returns the per-step losses and the argmax image
    the notebook's checkin shows."""
    with torch.random.fork_rng(devices=[]):
        return _notebook_run(clip, vqgan, target, size, steps, cutn, seed, lr, cut_pow, image_prompt, image_weight)


def _notebook_run(clip, vqgan, target, size, steps, cutn, seed, lr, cut_pow, image_prompt, image_weight):
    torch.manual_seed(seed)
    f, codebook = vqgan.factor, vqgan.codebook.detach()
    toks_y, toks_x, n_toks = size[1] // f, size[0] // f, codebook.shape[0]
    logits = torch.randn([toks_y * toks_x, n_toks]).requires_grad_(True)
    opt = torch.optim.AdamW([logits], lr=lr, weight_decay=0.0)
    prompts = [(target, 1.0)]
    if image_prompt is not None:
        with torch.no_grad():
            embeds = clip.encode_image(notebook_cutouts(image_prompt, clip.input_size[0], cutn, cut_pow)).float()
        prompts.append((embeds, image_weight))

    def synth(one_hot):
        z = (one_hot @ codebook).view([-1, toks_y, toks_x, codebook.shape[1]]).permute(0, 3, 1, 2)
        return _Clamp.apply(vqgan.decode(z), 0, 1)

    losses = []
    for _ in range(steps):
        opt.zero_grad()
        probs = logits.softmax(1)
        one_hot = F.one_hot(probs.multinomial(1)[..., 0], n_toks).to(logits.dtype)
        out = synth(_Replace.apply(one_hot, probs))
        embeds = clip.encode_image(notebook_cutouts(out, clip.input_size[0], cutn, cut_pow)).float()
        loss = sum(prompt_term(embeds, p, w) for p, w in prompts)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    with torch.no_grad():
        image = synth(F.one_hot(logits.argmax(1), n_toks).to(logits.dtype))
    return losses, image


# ---------------------------------------------------------------------------------------------- nerdyrodent
def nerdyrodent_augments(codes=("Af", "Pe", "Ji", "Er")):
    """generate.py's MakeCutouts augmentation list for its --augments codes (default Af Pe Ji Er)."""
    import kornia.augmentation as K

    built = {"Ji": lambda: K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
             "Sh": lambda: K.RandomSharpness(sharpness=0.3, p=0.5),
             "Pe": lambda: K.RandomPerspective(distortion_scale=0.7, p=0.7),
             "Af": lambda: K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros",
                                          keepdim=True),
             "Er": lambda: K.RandomErasing(scale=(.1, .4), ratio=(.3, 1 / .3), same_on_batch=True, p=0.7)}
    return torch.nn.Sequential(*(built[c]() for c in codes))


def nerdyrodent_cutouts(image, cut_size, cutn, augs, noise_fac=0.1):
    """generate.py's `latest` MakeCutouts.forward, drawing from the global RNG as it does."""
    pooled = [(F.adaptive_avg_pool2d(image, cut_size) + F.adaptive_max_pool2d(image, cut_size)) / 2
              for _ in range(cutn)]
    batch = augs(torch.cat(pooled, dim=0))
    if noise_fac:
        facs = batch.new_empty([cutn, 1, 1, 1]).uniform_(0, noise_fac)
        batch = batch + facs * torch.randn_like(batch)
    return batch


def nerdyrodent_run(clip, vqgan, target, *, size, steps, cutn, seed, lr=0.1, init_weight=0.0):
    """generate.py's loop (synth / ascend_txt / train) for one text target: random codes, Adam on z, straight-
    through quantization, pooled cutouts, z clamped to the codebook's range after each step; `--init_weight` as it
    is written there (z pulled to zero with weight w / (2i + 1)).

    Its cutouts draw from the global RNG; here each step runs them after `torch.manual_seed(s)` with s drawn from a
    per-run CPU generator, derived from the seed as vqclip derives a job's (init generator: codes, sample
    generator, cutout generator). Returns the per-step losses and the final image."""
    init = torch.Generator().manual_seed(seed)
    f, codebook = vqgan.factor, vqgan.codebook.detach()
    toks_y, toks_x, n_toks = size[1] // f, size[0] // f, codebook.shape[0]
    idx = torch.randint(n_toks, (toks_y * toks_x,), generator=init)
    z = (F.one_hot(idx, n_toks).float() @ codebook).view([-1, toks_y, toks_x, codebook.shape[1]]).permute(0, 3, 1, 2)
    torch.randint(2**62, (1,), generator=init)  # vqclip's sample generator: unused by z+quantize
    cut_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=init)))
    z = z.clone().requires_grad_(True)
    z_min = codebook.min(dim=0).values[None, :, None, None]
    z_max = codebook.max(dim=0).values[None, :, None, None]
    opt = torch.optim.Adam([z], lr=lr)
    augs = nerdyrodent_augments()

    def synth(z):
        x = z.movedim(1, 3)
        d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
        x_q = F.one_hot(d.argmin(-1), codebook.shape[0]).to(d.dtype) @ codebook
        return _Clamp.apply(vqgan.decode(_Replace.apply(x_q, x).movedim(3, 1)), 0, 1)

    losses = []
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        out = synth(z)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=cut_gen)))
            cuts = nerdyrodent_cutouts(out, clip.input_size, cutn, augs)
        result = [prompt_term(clip.encode_image(cuts).float(), target)]
        if init_weight:
            result.insert(0, F.mse_loss(z, torch.zeros_like(z)) * ((1 / torch.tensor(i * 2 + 1)) * init_weight) / 2)
        loss = sum(result)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))
    with torch.no_grad():
        image = synth(z)
    return losses, image
