"""Few-shot generation from the command line: K images of a class the network never saw in, new images of it out.

    python -m metagan_lib.generate my_shots/ --out samples.png          # a folder of K images (PNG, JPEG, ...)
    python -m metagan_lib.generate a.png b.png c.png --out samples.png  # or the files themselves
    python -m metagan_lib.generate --unseen-class Q --out q.png         # K images of an unseen class of the dataset
    python -m metagan_lib.generate --list-unseen                        # the names --unseen-class takes
    python -m metagan_lib.generate --unseen-class Q --method fifth-learner latent-inversion  # the baseline beside it

It loads notebook 05's fifth learner for ``--dataset`` (the context meta-GAN meta-trained on the dataset's seen
classes: shipped in ``artifacts/`` for glyphs; for digits and Omniglot trained by notebook 05 into this machine's cache
first, or here with ``--train``), adapts its
context to the shots as notebook 06 tests it (the dataset's chosen steps and, on Omniglot, its sample filter) and
writes the shots, as the network sees them, above the samples in one PNG; ``--save`` also writes both as ``uint8``
tensors. ``--method latent-inversion`` draws notebook 06's latent-inversion baseline instead or beside it
(:func:`load_latent_inversion`: loaded, never trained or tuned here).

Images are read as the dataset's own were made: grey levels, dark strokes on a light background or light on dark (the
border decides), then for glyphs and digits cropped to the strokes and centred in a 20-pixel box of a 28x28 canvas
(:func:`~metagan_lib.images.fit_to_canvas`), for Omniglot padded to a square and shrunk whole, as its 105x105 scans are;
an image already 28x28 is taken as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checks, context, evaluation, fewshot, inversion, methods, profiles
from .artifacts import is_current, read_payload, shipped_path, stale_shipped_reason
from .data import DatasetError, ImageDataset, _omniglot_resize, dataset_name, load_dataset
from .images import IMAGE_SIZE, fit_to_canvas, to_signed, to_uint8
from .runtime import choose_device
from .seeds import derive_seed
from .tasks import TaskSampler
from .train import run_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LAYOUTS = {"glyphs": "fit", "digits": "fit", "mnist": "fit", "omniglot": "whole"}
"""How each dataset's images were made from a drawing: ``"fit"`` crops to the strokes and centres them in a 20-pixel
box (the glyph renderer, MNIST), ``"whole"`` shrinks the whole square drawing (Omniglot's scans)."""
MIN_CONTRAST = 0.1  # an image whose grey levels span less than this holds no strokes
DEFAULT_SHOTS = 5  # --unseen-class shows this many of the class's images: the K the fifth learner is meta-trained with
METHODS = ("fifth-learner", "latent-inversion")
"""What ``--method`` takes: notebook 05's fifth learner (the meta-learner) and notebook 06's latent-inversion baseline
(the shots inverted into a GAN pretrained on the seen classes, samples drawn around them)."""


class ShotError(ValueError):
    """A shot image that cannot be read as a drawing of a class; the message names the file and the fix."""


class NotTrainedError(RuntimeError):
    """No meta-trained network for the dataset here; the message names what to run."""


def image_files(paths: list[Path]) -> list[Path]:
    """``paths`` with each folder replaced by its image files (sorted by name); refuses a missing path, a file that is
    not an image and a folder without images."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ShotError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); put the K shots there.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ShotError(f"{path} does not exist; give image files or a folder of them.")
    return files


def read_image(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The image at ``path``, turned upright by its EXIF orientation, as grey levels ``[H, W]`` in [0, 1], and its
    opacity ``[H, W]`` in [0, 1] when it has an alpha channel (else ``None``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            alpha = None
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                alpha = torch.from_numpy(np.asarray(image.getchannel("A"), dtype=np.float32).copy()) / 255.0
            gray = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32).copy()) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ShotError(f"{path} cannot be read as an image ({error}); give PNG, JPEG or another format Pillow opens.")
    return gray, alpha


def _border(image: torch.Tensor) -> torch.Tensor:
    return torch.cat([image[0], image[-1], image[:, 0], image[:, -1]])


def ink_of(gray: torch.Tensor, alpha: torch.Tensor | None = None, what: str = "image") -> torch.Tensor:
    """Grey levels (and opacity) ``[H, W]`` -> ink in [0, 1], strokes 1 and background 0.

    With an alpha channel that varies, the opaque pixels are the strokes, whatever their colour. Otherwise the grey
    levels are inverted when the border, the background, is lighter than mid-grey (dark strokes on paper), and
    rescaled so that the background (the border's median) is 0 and full ink stays 1. Then the background's noise (4
    standard deviations of the border's, from its median absolute deviation) is taken off the same way: a clean image,
    whose border is mostly blank, is unchanged."""
    if alpha is not None and alpha.max() - alpha.min() >= MIN_CONTRAST:
        ink = alpha
    else:
        if gray.max() - gray.min() < MIN_CONTRAST:
            raise ShotError(
                f"{what} is one flat grey level (range {float(gray.max() - gray.min()):.3f}): no strokes to learn "
                "from; give a drawing of the character, dark on light or light on dark."
            )
        ink = 1.0 - gray if _border(gray).median() > 0.5 else gray
        background = _border(ink).median()
        ink = (ink - background) / (1.0 - background)  # unclamped: the border's noise keeps both its sides
    border = _border(ink)
    noise = 4 * 1.4826 * (border - border.median()).abs().median()  # 4 standard deviations, robustly (MAD)
    if noise >= 0.8:
        raise ShotError(f"{what}: its border is covered in strokes or noise; crop it so the character has a margin.")
    ink = ((ink - noise) / (1.0 - noise)).clamp(0.0, 1.0)
    if ink.max() < MIN_CONTRAST:
        raise ShotError(f"{what}: no strokes stand out from its background's noise; give a cleaner drawing.")
    return ink


def _strokes_box(ink: torch.Tensor) -> torch.Tensor:
    """``ink`` cropped to the pixels above half its maximum, with a margin of 3% of its size (at least 1 pixel)."""
    rows = torch.nonzero(ink.amax(dim=1) > 0.5 * ink.max()).flatten()
    cols = torch.nonzero(ink.amax(dim=0) > 0.5 * ink.max()).flatten()
    margin = max(1, round(0.03 * max(ink.shape)))
    top, left = max(0, int(rows[0]) - margin), max(0, int(cols[0]) - margin)
    return ink[top : int(rows[-1]) + margin + 1, left : int(cols[-1]) + margin + 1]


def to_canvas(ink: torch.Tensor, layout: str) -> torch.Tensor:
    """Ink ``[H, W]`` -> ``uint8`` ``[1, 28, 28]`` laid out as the dataset's images are (:data:`LAYOUTS`); ink already
    28x28 is taken as it is (an image of the dataset's own format reads back unchanged). ``"fit"`` crops to the strokes
    (:func:`_strokes_box`, so that faint specks do not widen the crop) and rescales the result so its darkest stroke
    is full ink (thin strokes stay visible once shrunk)."""
    if tuple(ink.shape) == (IMAGE_SIZE, IMAGE_SIZE):
        return to_uint8(ink)[None]
    if layout == "fit":
        canvas = fit_to_canvas(_strokes_box(ink))
        return to_uint8(canvas / canvas.max())[None]
    if layout != "whole":
        raise ValueError(f"Unknown layout {layout!r}; choose one of {', '.join(sorted(set(LAYOUTS.values())))}.")
    height, width = ink.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = F.pad(ink, (left, side - width - left, top, side - height - top))  # background ink 0
    return to_uint8(_omniglot_resize([square])[0])  # Omniglot's own shrink of its 105x105 scans


def read_shots(paths: list[Path], dataset: str) -> torch.Tensor:
    """The shot images at ``paths`` (files or folders) as the dataset's images: ``uint8`` ``[K, 1, 28, 28]``."""
    layout = LAYOUTS[dataset_name(dataset)]
    files = image_files(paths)
    return torch.stack([to_canvas(ink_of(*read_image(f), what=str(f)), layout) for f in files])


def unseen_class(data: ImageDataset, name: str) -> int:
    """The index of the unseen class called ``name``: its whole name (``"U+0051 Q"``), the part after the code
    (``"Q"``) or the code (``"U+0051"``); refuses a seen class and a name no unseen class has."""
    named = lambda classes: [
        c for c in classes.tolist() if name in (data.class_names[c], *data.class_names[c].split(" ", 1))
    ]
    matches = named(data.unseen_classes)
    if len(matches) == 1:
        return matches[0]
    if not matches and named(data.seen_classes):
        raise ShotError(
            f"{name!r} is a seen class of {data.name}, one the network was meta-trained on; pick an unseen one "
            "(--list-unseen names them)."
        )
    if matches:
        raise ShotError(f"{name!r} names {len(matches)} unseen classes of {data.name}; give the whole name.")
    examples = ", ".join(repr(data.class_names[c]) for c in data.unseen_classes[:5].tolist())
    raise ShotError(f"{data.name} has no unseen class {name!r} (e.g. {examples}; --list-unseen names all).")


def class_shots(data: ImageDataset, index: int, shots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A class's first ``shots`` images and the rest (held out): ``uint8`` ``[K, 1, 28, 28]``, ``[M, 1, 28, 28]``."""
    images = data.images[data.labels == index]
    if not 1 <= shots < len(images):
        raise ShotError(f"--shots must be between 1 and {len(images) - 1} for this class ({len(images)} images).")
    return images[:shots], images[shots:]


def _loadable(*files: tuple[Path, dict]) -> tuple[bool, str]:
    """Whether each ``(path, key)`` holds a current artefact (:func:`~metagan_lib.artifacts.is_current`), and, where
    not, why a shipped file there cannot be used, as sentences for the error (not warned: nothing is retrained here)."""
    current = [is_current(path, key, rebuilds=False) for path, key in files]
    reasons = [stale_shipped_reason(path, key) for (path, key), ok in zip(files, current) if not ok]
    return all(current), "".join(" " + reason for reason in reasons if reason)


def load_fifth_learner(
    data: ImageDataset, *, device: torch.device, profile: str = "full", seed: int = 0, train: bool = False
) -> context.ContextMetaGAN:
    """Notebook 05's fifth learner for ``data`` (:data:`~metagan_lib.context.CHOSEN_CONTEXT_LEARNER`, and its guide
    network), from the cache or ``artifacts/`` under the keys notebooks 05-06 train it with; when neither holds it,
    meta-trained here if ``train``, else :class:`NotTrainedError`."""
    steps_05, steps_06 = profiles.settings("05", profile), profiles.settings("06", profile)
    ((name, config),) = context.chosen_context_configs(tasks=steps_06.tasks, shots=steps_06.shots).items()
    seen = TaskSampler(data, data.seen_classes, device=device, seed=seed)
    guide_path = profiles.artifact_path(profile, data.name, seed, "05_guide_net")
    path = profiles.artifact_path(profile, data.name, seed, "05_" + name.replace(" ", "_").lower())  # as 05-06 name it
    guide_key = context.guide_network_key(data, steps_05.guide_steps, scoring_seed=seed)
    key = context.context_gan_key(config, seen, steps_05.chosen_context_steps, seed, guide_key=guide_key)
    current, stale = (True, "") if train else _loadable((guide_path, guide_key), (path, key))
    if not current:
        raise NotTrainedError(
            f"No meta-trained {name} for {data.name} ({profile} profile) in artifacts/ or this machine's cache. Run "
            f"notebook 05 on it first (python -m metagan_lib.reproduce --profile {profile} --dataset {data.name} "
            "--only 05), or add --train to meta-train it here (tens of minutes on a 2-core CPU; cached afterwards)."
            + stale
        )
    guide = context.guide_network(guide_path, data, steps_05.guide_steps, scoring_seed=seed, device=device)
    return context.train_or_load_context_gan(
        path, config, seen, steps_05.chosen_context_steps, seed=seed, device=device, description=name, guide=guide
    )


def fifth_learner_method(model: context.ContextMetaGAN, dataset: str) -> methods.Method:
    """The fifth learner as notebook 06 tests it on ``dataset`` (:func:`~metagan_lib.methods.context_method`: the
    dataset's chosen test steps and, where validation adopted one, its sample filter)."""
    return methods.context_method(context.CHOSEN_CONTEXT_LEARNER, model, dataset_name(dataset))


def _stored_grids(path: Path) -> list[list[float]]:
    """The grids of the settings stored at ``path`` and its shipped counterpart (read from their keys; the caller
    checks the whole key with :func:`~metagan_lib.artifacts.is_current` before trusting one)."""
    grids = []
    for file in (path, shipped_path(path)):
        payload = None if file is None else read_payload(file)
        try:
            grids.append([float(value) for value in payload["key"]["settings"]["grid"]])
        except (TypeError, KeyError, ValueError):  # no file, or not a stored setting
            continue
    return grids


def load_latent_inversion(
    data: ImageDataset, *, device: torch.device, profile: str = "full", seed: int = 0
) -> methods.Method:
    """Notebook 06's latent-inversion baseline for ``data``: notebook 02's GAN pretrained on the seen classes, the
    sampling noise notebook 06 chose for it on seen-class tasks, and its Adam steps. Everything is loaded (cache or
    ``artifacts/``), each file checked against the key notebook 06 made it under; nothing is trained or chosen here:
    when a file is missing or stale, :class:`NotTrainedError` names the notebook to run."""
    cfg = profiles.settings("06", profile)
    gan_path, gan_config = methods.pretrained_gan_job(profile, data.name, seed)
    net_path = profiles.artifact_path(profile, data.name, seed, "06_feature_net")
    setting_path = profiles.artifact_path(profile, data.name, seed, "06_setting_inversion_noise")
    missing = (
        f"No latent-inversion baseline for {data.name} ({profile} profile) in artifacts/ or this machine's cache: "
        "notebook 06 makes it (notebook 02's GAN pretrained on the seen classes, and the noise it chooses on "
        f"seen-class tasks). Run it first (python -m metagan_lib.reproduce --profile {profile} --dataset {data.name} "
        "--only 06)."
    )
    seen_images, _ = data.subset(data.seen_classes)
    net_key = evaluation.feature_net_key(data, cfg.feature_steps, seed)
    current, stale = _loadable((gan_path, run_key(seen_images, gan_config, seed)), (net_path, net_key))
    if not current:
        raise NotTrainedError(missing + stale)
    generator = methods.pretrain_on_seen(data, gan_config, gan_path, seed=seed, device=device).sampling_generator
    net = evaluation.train_or_load_feature_net(net_path, data, cfg.feature_steps, seed=seed, device=device)

    def at_noise(noise: float) -> methods.Method:  # as notebook 06 makes the baseline (the key check holds it to that)
        model = inversion.LatentInversion(generator, noise)
        return methods.Method("latent inversion", kind="invert", model=model, steps=cfg.inversion_steps)

    budget = dict(shots=cfg.default_shots, classes=cfg.classes, generated_per_class=cfg.generated_per_class, seed=seed)
    stale = ""
    for grid in _stored_grids(setting_path):
        key = fewshot.evaluation_key("setting", [at_noise(v) for v in grid], data, [net], {"grid": grid, **budget})
        current, stale = _loadable((setting_path, key))
        if current:
            noise, _ = fewshot.select_setting_or_load(setting_path, at_noise, data, net, grid, **budget)  # loads it
            return at_noise(noise)
    raise NotTrainedError(missing + stale)


def load_method(name: str, data: ImageDataset, *, device: torch.device, train: bool = False) -> methods.Method:
    """The generating method ``name`` (one of :data:`METHODS`) for ``data``, as notebook 06 tests it."""
    if name == "fifth-learner":
        return fifth_learner_method(load_fifth_learner(data, device=device, train=train), data.name)
    if name == "latent-inversion":
        return load_latent_inversion(data, device=device)
    raise ValueError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")


def load_methods(
    names: list[str], data: ImageDataset, *, device: torch.device, train: bool = False
) -> dict[str, methods.Method]:
    """:func:`load_method` for each of ``names``, in their order; those only ever loaded first, so that the fifth
    learner is meta-trained (``train``) only once every other method is found, and one :class:`NotTrainedError`
    naming every method that is missing."""
    loaded, missing = {}, []
    for name in sorted(names, key=lambda name: name == "fifth-learner"):
        try:
            loaded[name] = load_method(name, data, device=device, train=train and not missing)
        except NotTrainedError as error:
            missing.append(str(error))
    if missing:
        raise NotTrainedError(" ".join(missing))
    return {name: loaded[name] for name in names}


def generate_from_shots(
    method: methods.Method, shots: torch.Tensor, n: int, *, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """``n`` images ``[n, 1, 28, 28]`` in [-1, 1] of the class of ``shots`` (``uint8`` ``[K, 1, 28, 28]``) by
    ``method`` (:func:`load_method`), and the share of samples whose adaptation diverged (drawn blank). Every method
    draws from the same seed."""
    checks.positive_int("n", n)
    support = to_signed(shots)[None].to(device)  # one class: [1, K, 1, 28, 28]
    images = methods.generate(method, support, support, n, None, derive_seed(seed, "generate from shots"))
    images, diverged = methods.replace_diverged(images)
    return images[0], diverged


def adaptation_summary(method: methods.Method) -> str:
    """How ``method`` adapts to the shots, in words (its steps, and the fifth learner's sample filter or inversion's
    noise)."""
    if method.kind == "invert":
        noise = method.model.noise_scale
        return f"{method.steps} Adam steps on each shot's latent, noise {noise:g} around them"
    kept = method.model if isinstance(method.model, context.SampleSelection) else None
    filtered = "" if kept is None else f", {kept.oversample}x the samples drawn and 1 in {kept.oversample} kept"
    return f"{method.steps} context steps{filtered}"


def save_grid(
    path: Path, shots: torch.Tensor, samples: dict[str, torch.Tensor], title: str, held_out: torch.Tensor | None = None
) -> Path:
    """One PNG: the shots (as the networks see them), each method's samples (``{label: [n, 1, 28, 28]}``, a panel
    each), and held-out real images of the class if given."""
    import matplotlib.pyplot as plt

    from .plotting import image_grid, save_figure, show_grid

    per_row = 10
    networks = "the networks" if len(samples) > 1 else "the network"
    panels = [(f"the shots, as {networks} {'see' if len(samples) > 1 else 'sees'} them", to_signed(shots))]
    panels += [(label, images.cpu()) for label, images in samples.items()]
    if held_out is not None:
        panels.append((f"real images of the class {networks} {'were' if len(samples) > 1 else 'was'} not shown",
                       to_signed(held_out[:per_row])))  # fmt: skip
    # each panel as tall as its grid is at the figure's width (inches), so no panel is padded with blank space
    width = per_row * 0.6
    shapes = [image_grid(images, per_row).shape for _, images in panels]
    heights = [rows / columns * (width - 0.2) for rows, columns in shapes]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.4 * len(panels) + 0.4),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
    for ax, (label, images) in zip(axes[:, 0], panels):
        show_grid(images, nrow=per_row, title=label, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return save_figure(fig, path.parent, path.stem)
    finally:
        plt.close(fig)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m metagan_lib.generate", allow_abbrev=False,
        description="Generate new images of a class from K images of it, with the fifth learner meta-trained on the "
        "dataset's seen classes (notebooks 05-06), or with notebook 06's latent-inversion baseline beside it.",
    )  # fmt: skip
    parser.add_argument("images", nargs="*", type=Path, help="the shots: image files, or folders of them")
    parser.add_argument("--unseen-class", metavar="NAME", help="take the shots from this unseen class of the dataset")
    parser.add_argument("--list-unseen", action="store_true", help="print the dataset's unseen classes and stop")
    parser.add_argument("--shots", type=int, help="with --unseen-class: how many of its images (default 5)")
    parser.add_argument("--method", nargs="+", default=[METHODS[0]], metavar="NAME",
                        help=f"who generates, one or both: {', '.join(METHODS)} (default {METHODS[0]})")  # fmt: skip
    parser.add_argument("--dataset", default="glyphs", help="whose network: glyphs (default), digits, omniglot, mnist")
    parser.add_argument("--n", type=int, default=20, help="images to generate (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("generated.png"), help="the PNG to write (generated.png)")
    parser.add_argument("--save", type=Path, help="also write the shots and samples as uint8 tensors to this .pt file")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--train", action="store_true", help="meta-train the network here if none is shipped or cached")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in args.method:  # first: a file name taken into --method's list leaves no shots
        if name not in METHODS:
            hint = " (put the image files before --method, or end its list with --)" if Path(name).exists() else ""
            parser.error(f"--method {name}: no such method; choose from {', '.join(METHODS)}{hint}")
    if args.list_unseen:
        return
    if bool(args.images) == bool(args.unseen_class):
        parser.error("give the shots as image files or folders, or --unseen-class NAME (one of the two)")
    if args.images and args.shots is not None:
        parser.error("--shots picks how many images of --unseen-class to show; with files, K is the number given")
    if args.train and "fifth-learner" not in args.method:
        parser.error(
            "--train meta-trains the fifth learner, and latent inversion is only loaded (notebook 06 makes it): drop "
            "--train, or add --method fifth-learner"
        )
    if len(set(args.method)) < len(args.method):
        parser.error(f"--method names each method once, got {' '.join(args.method)}")
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.out.suffix != ".png" or args.out.is_dir():
        parser.error(f"--out {args.out}: give a file name ending in .png")
    if args.save is not None and (args.save.suffix.lower() != ".pt" or args.save.is_dir()):
        parser.error(f"--save {args.save}: give a .pt file name")


METHOD_LABELS = {
    "fifth-learner": f"the fifth learner ({context.CHOSEN_CONTEXT_LEARNER})",
    "latent-inversion": "latent inversion",
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    try:
        device = choose_device(args.device)
        data = load_dataset(args.dataset)
        if args.list_unseen:
            print("\n".join(data.class_names[c] for c in data.unseen_classes.tolist()))
            return 0
        held_out = None
        if args.unseen_class:
            shots, held_out = class_shots(
                data, unseen_class(data, args.unseen_class), DEFAULT_SHOTS if args.shots is None else args.shots
            )
        else:
            shots = read_shots(args.images, data.name)
        chosen = load_methods(args.method, data, device=device, train=args.train)
    except (ShotError, NotTrainedError, DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    samples = {}
    for name, method in chosen.items():
        images, diverged = generate_from_shots(method, shots, args.n, device=device, seed=args.seed)
        samples[name] = images
        print(
            f"{METHOD_LABELS[name]} ({data.name}), {_count(len(shots), 'shot')}: {adaptation_summary(method)}; "
            f"{_count(args.n, 'sample')}" + (f" ({diverged:.0%} diverged, drawn blank)" if diverged else "")
        )
    what = args.unseen_class or f"{_count(len(shots), 'image')} given"
    panels = {f"{METHOD_LABELS[name]}: {adaptation_summary(chosen[name])}": images for name, images in samples.items()}
    each = " each" if len(panels) > 1 else ""
    written = save_grid(args.out, shots, panels, f"{data.name}, {what}: {_count(args.n, 'sample')}{each}", held_out)
    print(f"wrote {written}")
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        as_uint8 = {name: to_uint8(images.add(1).div(2)).cpu() for name, images in samples.items()}
        torch.save({"dataset": data.name, "shots": shots, "samples": as_uint8, "seed": args.seed}, args.save)
        print(f"wrote the shots and each method's samples (uint8, [K or n, 1, 28, 28]) to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
