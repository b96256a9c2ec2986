"""The `tf.data` input pipeline: prepared records -> augmented training patches.

Image, CLAHE variant, label, FOV, ID mask and tube are stacked into one tensor
before cropping, flipping and rotating, so every geometric augmentation hits
all of them identically. Randomness comes from stateless ops fed by
`Dataset.random(seed)`, so a seeded pipeline gives the same patches on every run.

Scale (`fov_diameter` > 0): each image is sampled as if resampled so that its
field of view is `fov_diameter` px across (times a random `scale_jitter`
factor per visit): a crop of ``patch / factor`` source pixels is resampled to
``patch`` pixels, bilinearly with antialiasing for the image channels, the
label, FOV and tube thresholded at one half, the ID mask by nearest neighbour
(it is moved, never interpolated). The factor travels with the targets
(`length_scale`) so the segment-level loss still measures skeleton lengths.
Without resampling (factor 1) the crops are exactly those of the image grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from keras_vessel.config import AugmentConfig
from keras_vessel.data.targets import pack_targets
from keras_vessel.data.scaling import block_mean, resize_to
from keras_vessel.data.tfrecords import PrepareError, read_manifest, read_records

# layout of the stacked tensor that is cropped and augmented as one
_IMAGE, _CLAHE, _LABEL, _FOV, _TUBE, _ID = slice(0, 3), slice(3, 6), 6, 7, 8, 9
_SMOOTH, _BINARY = slice(0, 6), slice(6, 9)  # resampled bilinearly; thresholded after it
_PATCHES_PER_VISIT = 32

Folders = str | Path | Sequence[str | Path]


def _folders(records_dirs: Folders) -> list[Path]:
    if isinstance(records_dirs, (str, Path)):
        return [Path(records_dirs)]
    folders = [Path(folder) for folder in records_dirs]
    if not folders:
        raise PrepareError("no prepared folder given: expected one folder or a list of them")
    return folders


def split_names(records_dirs: Folders, validation_images: int, *, folds: int = 0,
                fold: int = 0) -> tuple[list[str], list[str]]:
    """Training and validation image names: the last `validation_images` (by name) are held out.

    With `folds` > 0, group `fold` of the names cut into `folds` contiguous
    groups (the first ones one longer when they do not divide evenly) is held
    out instead, so that k runs score every training image once. With several
    folders, each folder is split this way and the parts are joined, so every
    dataset is represented in validation; names must then be unique.
    """
    training: list[str] = []
    validation: list[str] = []
    seen: dict[str, Path] = {}
    for folder in _folders(records_dirs):
        names = sorted(image["name"] for image in read_manifest(folder)["images"])
        for name in names:
            if name in seen:
                raise PrepareError(f"image name {name!r} is in both {seen[name]} and {folder}; "
                                   "prepared folders trained together need distinct image names")
            seen[name] = folder
        part_training, part_validation = _split(folder, names, validation_images, folds, fold)
        training += part_training
        validation += part_validation
    return training, validation


def _split(folder: Path, names: list[str], validation_images: int, folds: int,
           fold: int) -> tuple[list[str], list[str]]:
    if folds:
        if not 2 <= folds <= len(names):
            raise PrepareError(
                f"data.folds must be 0 (off) or between 2 and {len(names)} for {folder} "
                f"({len(names)} images), got {folds}"
            )
        if not 0 <= fold < folds:
            raise PrepareError(f"data.fold must be between 0 and {folds - 1} (data.folds={folds}), got {fold}")
        size, longer = divmod(len(names), folds)
        start = fold * size + min(fold, longer)
        stop = start + size + (fold < longer)
        return names[:start] + names[stop:], names[start:stop]
    if validation_images < 0 or validation_images >= len(names):
        raise PrepareError(
            f"data.validation_images must be between 0 and {len(names) - 1} for {folder} "
            f"({len(names)} images), got {validation_images}"
        )
    cut = len(names) - validation_images
    return names[:cut], names[cut:]


def load_images(records_dirs: Folders, names: Sequence[str] | None = None, *,
                fov_diameter: float = 0.0) -> tf.data.Dataset:
    """Full prepared images as ``(stacked (H, W, 10) float32, scale ())``, optionally only `names`.

    ``scale`` is ``fov_diameter / the image's FOV diameter``, or 1 when
    `fov_diameter` is 0 (each image at its own scale).
    """
    dataset = None
    for folder in _folders(records_dirs):
        records = read_records(folder)
        dataset = records if dataset is None else dataset.concatenate(records)
    if names is not None:
        wanted = tf.constant(list(names) or [""])
        dataset = dataset.filter(lambda record: tf.reduce_any(tf.equal(record["name"], wanted)))

    def stack_and_scale(record: dict) -> tuple[tf.Tensor, tf.Tensor]:
        scale = (tf.constant(float(fov_diameter)) / record["fov_diameter"]) if fov_diameter else tf.constant(1.0)
        return _stack(record), scale

    return dataset.map(stack_and_scale, num_parallel_calls=tf.data.AUTOTUNE)


def _stack(record: dict) -> tf.Tensor:
    return tf.concat(
        [
            tf.cast(record["image"], tf.float32),
            tf.cast(record["clahe"], tf.float32),
            record["label"][..., None],
            record["fov"][..., None],
            record["tube"][..., None],
            tf.cast(record["id_mask"], tf.float32)[..., None],
        ],
        axis=-1,
    )


def get_dataset(
    records_dir: Folders,
    *,
    patch_size: int = 64,
    batch_size: int = 8,
    outputs: Sequence[str] = ("segment", "pixel"),
    names: Sequence[str] | None = None,
    training: bool = True,
    min_fov_fraction: float = 0.5,
    augment: AugmentConfig | None = None,
    ignore_outside_fov: bool = True,
    fov_diameter: float = 0.0,
    scale_jitter: float = 0.0,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of `(image, {output: y_true})` from one prepared folder or a list of them.

    training=True: an endless stream of random patches (kept when at least
    `min_fov_fraction` of the patch lies in the FOV), augmented. training=False:
    a finite, deterministic grid of non-overlapping patches, not augmented, for
    validation. `fov_diameter` > 0 samples every image at that FOV diameter
    (px), training patches with a further random factor in
    ``[1 / (1 + scale_jitter), 1 + scale_jitter]``. With an `InputContext`,
    `batch_size` is the global batch and each input pipeline draws its own patches.

    ``image`` is ``(B, P, P, 3)`` float32 RGB on 0-255; ``y_true`` is
    ``(B, P, P, 5)`` (`keras_vessel.losses.TARGET_CHANNELS`).
    """
    if patch_size < 8:
        raise ValueError(f"patch_size must be at least 8, got {patch_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not outputs:
        raise ValueError("outputs must name at least one model output, got none")
    if not (math.isfinite(fov_diameter) and fov_diameter >= 0):
        raise ValueError(f"fov_diameter must be 0 (each image at its own scale) or a diameter in px, "
                         f"got {fov_diameter}")
    if not (math.isfinite(scale_jitter) and 0 <= scale_jitter <= 1):
        raise ValueError(f"scale_jitter must be between 0 and 1, got {scale_jitter}")
    augment = augment or AugmentConfig()
    images = load_images(records_dir, names, fov_diameter=fov_diameter)
    drop_remainder = training
    if input_context is not None:
        # Every pipeline reads every image (a split may hold fewer images than
        # workers) and draws its own random patches; validation is identical on
        # all pipelines so that workers run the same number of steps.
        seed += 7919 * input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        drop_remainder = training or input_context.num_replicas_in_sync > 1

    def keep_in_fov(patches: tf.Tensor, scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        keep = tf.reduce_mean(patches[..., _FOV], axis=[1, 2]) >= min_fov_fraction
        return tf.boolean_mask(patches, keep), tf.boolean_mask(scale, keep)

    def to_examples(patches: tf.Tensor, image: tf.Tensor, scale: tf.Tensor):
        valid = patches[..., _FOV] if ignore_outside_fov else tf.ones_like(patches[..., _FOV])
        lengths = tf.ones_like(valid) * scale[:, None, None]
        target = pack_targets(patches[..., _LABEL], valid, patches[..., _ID], patches[..., _TUBE], lengths)
        return image, target

    def training_examples(stacked: tf.Tensor, scale: tf.Tensor, block: tf.Tensor, seeds: tf.Tensor):
        factor = scale * _jitter(scale_jitter, seeds[:2] + 3)
        patches, factor = _random_patches(stacked, patch_size, seeds[:2], augment, factor)
        factor = factor / block  # against the prepared image's grid, which the segment lengths are measured on
        patches, factors = keep_in_fov(patches, tf.fill([tf.shape(patches)[0]], factor))
        image = _intensity_variant(patches, seeds[1:], augment)
        image = camera_augment(image, seeds[1:] + 11, augment)
        return to_examples(patches, image, factors)

    def validation_examples(stacked: tf.Tensor, scale: tf.Tensor):
        resized, factor = _resample_image(stacked, scale)
        patches = _grid_patches(_pad_to_at_least(resized, patch_size), patch_size)
        patches, factors = keep_in_fov(patches, tf.fill([tf.shape(patches)[0]], factor))
        return to_examples(patches, patches[..., _IMAGE], factors)

    if training:
        ceiling = 1.0 + scale_jitter  # the largest jitter factor a visit draws
        images = images.map(lambda stacked, scale: shrink_for_visits(stacked, scale * ceiling) + (scale,),
                            num_parallel_calls=tf.data.AUTOTUNE).cache()
        visits = tf.data.Dataset.zip(images.repeat(), tf.data.Dataset.random(seed=seed).batch(3))
        examples = visits.map(
            lambda image, seeds: training_examples(image[0], image[2] * image[1], image[1], seeds),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        examples = images.map(validation_examples).cache()
    examples = examples.unbatch()
    if training:
        examples = examples.shuffle(8 * _PATCHES_PER_VISIT, seed=seed)
    batched = examples.batch(batch_size, drop_remainder=drop_remainder)
    # every output (head) is trained against the same targets
    batched = batched.map(lambda image, target: (image, {name: target for name in outputs}))
    return batched.prefetch(tf.data.AUTOTUNE)


def shrink_for_visits(stacked: tf.Tensor, largest_factor: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A stacked ``(H, W, 10)`` image averaged over ``b x b`` pixel blocks, and ``b`` (float32 scalar).

    ``b = floor(1 / largest_factor)``, the largest whole shrink that no visit
    of the image undoes (every visit samples it at ``largest_factor`` or
    less); below 2 the image is returned as it is, with ``b = 1``. Image and
    CLAHE channels are block means, label, FOV and tube block means cut at one
    half (as `_resample_stacked` cuts them), the ID mask the top-left pixel of
    each block (ids are moved, never mixed). A remainder of fewer than ``b``
    rows or columns at the bottom and right is dropped. So an 8 MP photograph
    sampled at a 540 px field of view is cached at 1/25 of its pixels, and
    each visit resamples crops of about ``patch / (factor x b)`` pixels
    instead of ``patch / factor``: the same area average as sampling the full
    image (`keras_vessel.data.scaling.resample` shrinks the same way at
    inference), at a fraction of the memory and time.
    """
    block = tf.maximum(tf.cast(tf.floor(1.0 / largest_factor), tf.int32), 1)

    def shrink() -> tf.Tensor:
        averaged = block_mean(stacked[..., :_TUBE + 1], block)
        rows, cols = tf.shape(averaged)[0], tf.shape(averaged)[1]
        ids = stacked[: rows * block : block, : cols * block : block, _ID:]
        binary = tf.cast(averaged[..., _BINARY] >= 0.5, tf.float32)
        return tf.concat([averaged[..., _SMOOTH], binary, ids], axis=-1)

    shrunk = tf.ensure_shape(tf.cond(block >= 2, shrink, lambda: stacked), [None, None, stacked.shape[-1]])
    return shrunk, tf.cast(block, tf.float32)


def _jitter(amount: float, seed: tf.Tensor) -> tf.Tensor:
    """A factor in [1 / (1 + amount), 1 + amount], log-uniform; exactly 1 for amount 0."""
    if not amount:
        return tf.constant(1.0)
    log_range = math.log1p(amount)
    return tf.exp(tf.random.stateless_uniform([], seed, -log_range, log_range))


def _resample_stacked(stacked: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Resample ``(..., H, W, 10)`` to `size`: image channels bilinearly, masks thresholded, ids nearest."""
    smooth = resize_to(stacked[..., :_TUBE + 1], size)
    ids = tf.image.resize(stacked[..., _ID:], size, method="nearest")
    binary = tf.cast(smooth[..., _BINARY] >= 0.5, tf.float32)
    return tf.concat([smooth[..., _SMOOTH], binary, ids], axis=-1)


def _resample_image(stacked: tf.Tensor, scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A whole stacked image at `scale` (unchanged for 1), and the factor actually applied (rounding)."""
    height = tf.cast(tf.shape(stacked)[0], tf.float32)
    size = tf.maximum(tf.cast(tf.round(tf.cast(tf.shape(stacked)[:2], tf.float32) * scale), tf.int32), 1)
    same = tf.reduce_all(tf.equal(size, tf.shape(stacked)[:2]))
    resized = tf.cond(same, lambda: stacked, lambda: _resample_stacked(stacked, size))
    return resized, tf.where(same, 1.0, tf.cast(size[0], tf.float32) / height)


def _pad_to_at_least(stacked: tf.Tensor, size: int | tf.Tensor) -> tf.Tensor:
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    pad_h, pad_w = tf.maximum(size - height, 0), tf.maximum(size - width, 0)
    return tf.cond(
        (pad_h > 0) | (pad_w > 0), lambda: tf.pad(stacked, [[0, pad_h], [0, pad_w], [0, 0]]), lambda: stacked
    )


def _random_patches(
    stacked: tf.Tensor,
    size: int,
    seed: tf.Tensor,
    augment: AugmentConfig | None = None,
    factor: tf.Tensor | float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """`_PATCHES_PER_VISIT` random patches of one image at `factor`, and the factor actually applied.

    Crops of ``round(size / factor)`` source pixels are gathered in one go and
    resampled to `size` (not at all when the crop is already `size`). The
    geometric augmentation (one of the 8 flips / quarter turns per visit) is
    folded into the gather indices, so it moves every channel together and
    costs nothing.
    """
    crop = tf.maximum(tf.cast(tf.round(size / tf.cast(factor, tf.float32)), tf.int32), 8)
    stacked = _pad_to_at_least(stacked, crop)
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    count = _PATCHES_PER_VISIT
    top = tf.random.stateless_uniform([count], seed, 0, height - crop + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([count], seed + 1, 0, width - crop + 1, dtype=tf.int32)
    rows, cols = tf.meshgrid(tf.range(crop), tf.range(crop), indexing="ij")
    if augment is not None:
        draws = tf.random.stateless_uniform([2], seed + 2)
        if augment.flips:  # left-right flip
            cols = tf.where(draws[0] < 0.5, crop - 1 - cols, cols)
        if augment.rot90:  # k quarter turns as tf.image.rot90: out[i, j] = in[j, size - 1 - i]
            for k in range(1, 4):
                turn = tf.cast(draws[1] * 4, tf.int32) >= k
                rows, cols = tf.where(turn, cols, rows), tf.where(turn, crop - 1 - rows, cols)
    channels = stacked.shape[-1]
    flat = tf.reshape(stacked, [height * width, channels])
    index = (top[:, None, None] + rows[None]) * width + left[:, None, None] + cols[None]
    crops = tf.gather(flat, index)  # (count, crop, crop, C)
    patches = tf.cond(tf.equal(crop, size), lambda: crops, lambda: _resample_stacked(crops, [size, size]))
    patches = tf.ensure_shape(patches, [count, size, size, channels])
    return patches, tf.cast(size, tf.float32) / tf.cast(crop, tf.float32)


def _grid_patches(stacked: tf.Tensor, size: int) -> tf.Tensor:
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    padded = tf.pad(stacked, [[0, (-height) % size], [0, (-width) % size], [0, 0]])
    rows = tf.shape(padded)[0] // size
    cols = tf.shape(padded)[1] // size
    channels = stacked.shape[-1]
    grid = tf.reshape(padded, [rows, size, cols, size, channels])
    return tf.reshape(tf.transpose(grid, [0, 2, 1, 3, 4]), [rows * cols, size, size, channels])


def _intensity_variant(patches: tf.Tensor, seed: tf.Tensor, augment: AugmentConfig) -> tf.Tensor:
    """The image channels of one intensity variant, drawn once per visit for all its patches.

    CLAHE, contrast stretch, Gaussian noise or none, as the authors made one
    copy of each image per variant. Drawing per visit computes only the chosen
    variant; the shuffle buffer mixes visits, so batches hold many variants.
    """
    image, fov = patches[..., _IMAGE], patches[..., _FOV]
    cut_clahe = augment.clahe_probability
    cut_stretch = cut_clahe + augment.contrast_stretch_probability
    cut_noise = cut_stretch + augment.noise_probability
    choice = tf.random.stateless_uniform([], seed)
    variant = sum(tf.cast(choice >= cut, tf.int32) for cut in (cut_clahe, cut_stretch, cut_noise))
    return tf.switch_case(
        variant,
        [
            lambda: patches[..., _CLAHE],
            lambda: _contrast_stretch(image, fov),
            lambda: _gaussian_noise(image, augment.noise_variance, seed + 1),
            lambda: image,
        ],
    )


def _contrast_stretch(image: tf.Tensor, fov: tf.Tensor) -> tf.Tensor:
    """Stretch each channel linearly so its FOV range fills 0-255."""
    inside = fov[..., None] > 0
    big = tf.constant(1e9)
    low = tf.reduce_min(tf.where(inside, image, big), axis=[-3, -2], keepdims=True)
    high = tf.reduce_max(tf.where(inside, image, -big), axis=[-3, -2], keepdims=True)
    stretched = tf.clip_by_value((image - low) * 255.0 / tf.maximum(high - low, 1.0), 0.0, 255.0)
    return tf.where(tf.reduce_any(inside, axis=[-3, -2], keepdims=True), stretched, image)


def _gaussian_noise(image: tf.Tensor, variance: float, seed: tf.Tensor) -> tf.Tensor:
    """Gaussian noise of `variance` on the [0, 1] scale, like MATLAB's imnoise."""
    noise = tf.random.stateless_normal(tf.shape(image), seed, stddev=255.0 * variance**0.5)
    return tf.clip_by_value(image + noise, 0.0, 255.0)


def camera_augment(image: tf.Tensor, seed: tf.Tensor, augment: AugmentConfig) -> tf.Tensor:
    """What another camera would have made of the patches: ``(N, P, P, 3)`` 0-255 in and out.

    In a camera's order: white balance and exposure (per patch), tone curve
    (gamma, per patch), contrast (per patch, about the patch mean), defocus
    (Gaussian blur, per visit) and JPEG compression (per visit). Every part
    is off at its default of 0, so the authors' recipe is unchanged.
    """
    amounts = (augment.colour_balance, augment.brightness, augment.gamma, augment.contrast)
    if not any(amounts) and not augment.blur_probability and not augment.jpeg_probability:
        return image
    count = tf.shape(image)[0]

    def uniform(shape: list, offset: int) -> tf.Tensor:  # in [-1, 1]
        return 2.0 * tf.random.stateless_uniform(shape, seed + offset) - 1.0

    x = image / 255.0
    if augment.colour_balance:
        x = x * (1.0 + augment.colour_balance * uniform([count, 1, 1, 3], 1))
    if augment.brightness:
        x = x * (1.0 + augment.brightness * uniform([count, 1, 1, 1], 2))
    x = tf.clip_by_value(x, 0.0, 1.0)
    if augment.gamma:
        x = tf.pow(x + 1e-6, tf.exp(augment.gamma * uniform([count, 1, 1, 1], 3)))
    if augment.contrast:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = mean + (1.0 + augment.contrast * uniform([count, 1, 1, 1], 4)) * (x - mean)
    x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    draws = tf.random.stateless_uniform([4], seed + 5)
    if augment.blur_probability:
        sigma = 0.3 + draws[1] * max(augment.blur_sigma - 0.3, 0.0)
        x = tf.cond(draws[0] < augment.blur_probability, lambda: gaussian_blur(x, sigma, augment.blur_sigma),
                    lambda: x)
    if augment.jpeg_probability:
        quality = tf.cast(augment.jpeg_quality + draws[3] * (95 - augment.jpeg_quality), tf.int32)
        x = tf.cond(draws[2] < augment.jpeg_probability, lambda: _jpeg(x, quality), lambda: x)
    return x


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, max_sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of ``(N, H, W, C)`` with a kernel sized for `max_sigma` (reflected edges)."""
    radius = max(1, math.ceil(2.5 * max_sigma))
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = images.shape[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, cols, [1, 1, 1, 1], "VALID")


def _jpeg(images: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    """Encode and decode every patch as JPEG at `quality`."""
    unit = tf.clip_by_value(images / 255.0, 0.0, 1.0)  # float images are taken as [0, 1]
    compressed = tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, quality), unit)
    return compressed * 255.0
