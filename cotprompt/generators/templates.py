"""Prompt templates shipped with cotprompt (``{class}`` is the label)."""

from __future__ import annotations

#: CoOp's hand-crafted zero-shot template per dataset (CoOp, ``trainers/zsclip.py``), keyed by
#: CoOp's dataset class names and by lower-case aliases.
COOP_DATASET_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {class}, a type of pet.",
    "OxfordFlowers": "a photo of a {class}, a type of flower.",
    "FGVCAircraft": "a photo of a {class}, a type of aircraft.",
    "DescribableTextures": "{class} texture.",
    "EuroSAT": "a centered satellite photo of {class}.",
    "StanfordCars": "a photo of a {class}.",
    "Food101": "a photo of {class}, a type of food.",
    "SUN397": "a photo of a {class}.",
    "Caltech101": "a photo of a {class}.",
    "UCF101": "a photo of a person doing {class}.",
    "ImageNet": "a photo of a {class}.",
    "ImageNetSketch": "a photo of a {class}.",
    "ImageNetV2": "a photo of a {class}.",
    "ImageNetA": "a photo of a {class}.",
    "ImageNetR": "a photo of a {class}.",
}

_ALIASES = {
    "oxford_pets": "OxfordPets",
    "pets": "OxfordPets",
    "oxford_flowers": "OxfordFlowers",
    "flowers102": "OxfordFlowers",
    "fgvc_aircraft": "FGVCAircraft",
    "aircraft": "FGVCAircraft",
    "dtd": "DescribableTextures",
    "eurosat": "EuroSAT",
    "stanford_cars": "StanfordCars",
    "food101": "Food101",
    "sun397": "SUN397",
    "caltech101": "Caltech101",
    "ucf101": "UCF101",
    "imagenet": "ImageNet",
}

#: CoOp's 7-template subset of the ImageNet ensemble (``IMAGENET_TEMPLATES_SELECT``).
IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    "itap of a {class}.",
    "a bad photo of the {class}.",
    "a origami {class}.",
    "a photo of the large {class}.",
    "a {class} in a video game.",
    "art of the {class}.",
    "a photo of the small {class}.",
)

#: The 80 ImageNet prompt templates of the CLIP paper's zero-shot evaluation.
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(
    t.replace("{}", "{class}")
    for t in (
        "a bad photo of a {}.",
        "a photo of many {}.",
        "a sculpture of a {}.",
        "a photo of the hard to see {}.",
        "a low resolution photo of the {}.",
        "a rendering of a {}.",
        "graffiti of a {}.",
        "a bad photo of the {}.",
        "a cropped photo of the {}.",
        "a tattoo of a {}.",
        "the embroidered {}.",
        "a photo of a hard to see {}.",
        "a bright photo of a {}.",
        "a photo of a clean {}.",
        "a photo of a dirty {}.",
        "a dark photo of the {}.",
        "a drawing of a {}.",
        "a photo of my {}.",
        "the plastic {}.",
        "a photo of the cool {}.",
        "a close-up photo of a {}.",
        "a black and white photo of the {}.",
        "a painting of the {}.",
        "a painting of a {}.",
        "a pixelated photo of the {}.",
        "a sculpture of the {}.",
        "a bright photo of the {}.",
        "a cropped photo of a {}.",
        "a plastic {}.",
        "a photo of the dirty {}.",
        "a jpeg corrupted photo of a {}.",
        "a blurry photo of the {}.",
        "a photo of the {}.",
        "a good photo of the {}.",
        "a rendering of the {}.",
        "a {} in a video game.",
        "a photo of one {}.",
        "a doodle of a {}.",
        "a close-up photo of the {}.",
        "a photo of a {}.",
        "the origami {}.",
        "the {} in a video game.",
        "a sketch of a {}.",
        "a doodle of the {}.",
        "a origami {}.",
        "a low resolution photo of a {}.",
        "the toy {}.",
        "a rendition of the {}.",
        "a photo of the clean {}.",
        "a photo of a large {}.",
        "a rendition of a {}.",
        "a photo of a nice {}.",
        "a photo of a weird {}.",
        "a blurry photo of a {}.",
        "a cartoon {}.",
        "art of a {}.",
        "a sketch of the {}.",
        "a embroidered {}.",
        "a pixelated photo of a {}.",
        "itap of the {}.",
        "a jpeg corrupted photo of the {}.",
        "a good photo of a {}.",
        "a plushie {}.",
        "a photo of the nice {}.",
        "a photo of the small {}.",
        "a photo of the weird {}.",
        "the cartoon {}.",
        "art of the {}.",
        "a drawing of the {}.",
        "a photo of the large {}.",
        "a black and white photo of a {}.",
        "the plushie {}.",
        "a dark photo of a {}.",
        "itap of a {}.",
        "graffiti of the {}.",
        "a toy {}.",
        "itap of my {}.",
        "a photo of a cool {}.",
        "a photo of a small {}.",
        "a tattoo of the {}.",
    )
)

#: Default step texts of a CoT-PT chain, coarse to fine (a reconstruction: the paper's exact
#: step prompts are not published). Each follows the learnable context of its step.
COT_DEFAULT_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("class", ("{class}.",)),
    ("object", ("the {class} in the picture.",)),
    ("details", ("a close-up of the details of the {class}.",)),
)


def dataset_template(dataset: str | None) -> str | None:
    """CoOp's zero-shot template for ``dataset`` (CoOp name or alias), or ``None``."""
    if dataset is None:
        return None
    key = dataset if dataset in COOP_DATASET_TEMPLATES else _ALIASES.get(dataset.lower())
    return COOP_DATASET_TEMPLATES.get(key) if key else None
