"""The `tf.data` input pipeline: prepared records -> augmented training patches.

Image, CLAHE variant, label, FOV, ID mask and tube are stacked into one tensor
before cropping, flipping and rotating, so every geometric augmentation hits
all of them identically, and the ID mask is only ever moved, never
interpolated. Randomness comes from stateless ops fed by `Dataset.random(seed)`,
so a seeded pipeline gives the same patches on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from keras_vessel.config import AugmentConfig
from keras_vessel.losses import pack_targets
from keras_vessel.tfrecords import PrepareError, read_manifest, read_records

# layout of the stacked tensor that is cropped and augmented as one
_IMAGE, _CLAHE, _LABEL, _FOV, _TUBE, _ID = slice(0, 3), slice(3, 6), 6, 7, 8, 9
_PATCHES_PER_VISIT = 32


def split_names(records_dir: str | Path, validation_images: int, *, folds: int = 0,
                fold: int = 0) -> tuple[list[str], list[str]]:
    """Training and validation image names: the last `validation_images` (by name) are held out.

    With `folds` > 0, group `fold` of the names cut into `folds` contiguous
    groups (the first ones one longer when they do not divide evenly) is held
    out instead, so that k runs score every training image once.
    """
    names = sorted(image["name"] for image in read_manifest(records_dir)["images"])
    if folds:
        if not 2 <= folds <= len(names):
            raise PrepareError(
                f"data.folds must be 0 (off) or between 2 and {len(names)} for {records_dir} "
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
            f"data.validation_images must be between 0 and {len(names) - 1} for {records_dir} "
            f"({len(names)} images), got {validation_images}"
        )
    cut = len(names) - validation_images
    return names[:cut], names[cut:]


def load_images(records_dir: str | Path, names: Sequence[str] | None = None) -> tf.data.Dataset:
    """Full prepared images as stacked float32 tensors (H, W, 10), optionally only `names`."""
    dataset = read_records(records_dir)
    if names is not None:
        wanted = tf.constant(list(names) or [""])
        dataset = dataset.filter(lambda record: tf.reduce_any(tf.equal(record["name"], wanted)))
    return dataset.map(_stack, num_parallel_calls=tf.data.AUTOTUNE)


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
    records_dir: str | Path,
    *,
    patch_size: int = 64,
    batch_size: int = 8,
    outputs: Sequence[str] = ("segment", "pixel"),
    names: Sequence[str] | None = None,
    training: bool = True,
    min_fov_fraction: float = 0.5,
    augment: AugmentConfig | None = None,
    ignore_outside_fov: bool = True,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of `(image, {output: y_true})` from a prepared folder.

    training=True: an endless stream of random patches (kept when at least
    `min_fov_fraction` of the patch lies in the FOV), augmented. training=False:
    a finite, deterministic grid of non-overlapping patches, not augmented, for
    validation. With an `InputContext`, `batch_size` is the global batch and
    each input pipeline draws its own patches.
    """
    if patch_size < 8:
        raise ValueError(f"patch_size must be at least 8, got {patch_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not outputs:
        raise ValueError("outputs must name at least one model output, got none")
    augment = augment or AugmentConfig()
    images = load_images(records_dir, names)
    drop_remainder = training
    if input_context is not None:
        # Every pipeline reads every image (a split may hold fewer images than
        # workers) and draws its own random patches; validation is identical on
        # all pipelines so that workers run the same number of steps.
        seed += 7919 * input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        drop_remainder = training or input_context.num_replicas_in_sync > 1
    images = images.map(lambda stacked: _pad_to_at_least(stacked, patch_size)).cache()

    def keep_in_fov(patches: tf.Tensor) -> tf.Tensor:
        return tf.boolean_mask(patches, tf.reduce_mean(patches[..., _FOV], axis=[1, 2]) >= min_fov_fraction)

    def to_examples(patches: tf.Tensor, image: tf.Tensor):
        valid = patches[..., _FOV] if ignore_outside_fov else tf.ones_like(patches[..., _FOV])
        target = pack_targets(patches[..., _LABEL], valid, patches[..., _ID], patches[..., _TUBE])
        return image, target

    def training_examples(stacked: tf.Tensor, seeds: tf.Tensor):
        patches = keep_in_fov(_random_patches(stacked, patch_size, seeds[:2], augment))
        return to_examples(patches, _intensity_variant(patches, seeds[1:], augment))

    if training:
        visits = tf.data.Dataset.zip(images.repeat(), tf.data.Dataset.random(seed=seed).batch(3))
        examples = visits.map(training_examples, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        examples = images.map(lambda stacked: keep_in_fov(_grid_patches(stacked, patch_size)))
        examples = examples.map(lambda patches: to_examples(patches, patches[..., _IMAGE]))
    examples = examples.unbatch()
    if training:
        examples = examples.shuffle(8 * _PATCHES_PER_VISIT, seed=seed)
    batched = examples.batch(batch_size, drop_remainder=drop_remainder)
    # every output (head) is trained against the same targets
    batched = batched.map(lambda image, target: (image, {name: target for name in outputs}))
    return batched.prefetch(tf.data.AUTOTUNE)


def _pad_to_at_least(stacked: tf.Tensor, size: int) -> tf.Tensor:
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    return tf.pad(
        stacked, [[0, tf.maximum(size - height, 0)], [0, tf.maximum(size - width, 0)], [0, 0]]
    )


def _random_patches(
    stacked: tf.Tensor, size: int, seed: tf.Tensor, augment: AugmentConfig | None = None
) -> tf.Tensor:
    """`_PATCHES_PER_VISIT` random crops of one image, gathered in one go.

    The geometric augmentation (one of the 8 flips / quarter turns per visit)
    is folded into the gather indices, so it moves every channel together
    and costs nothing.
    """
    height, width = tf.shape(stacked)[0], tf.shape(stacked)[1]
    count = _PATCHES_PER_VISIT
    top = tf.random.stateless_uniform([count], seed, 0, height - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([count], seed + 1, 0, width - size + 1, dtype=tf.int32)
    rows, cols = tf.meshgrid(tf.range(size), tf.range(size), indexing="ij")
    if augment is not None:
        draws = tf.random.stateless_uniform([2], seed + 2)
        if augment.flips:  # left-right flip
            cols = tf.where(draws[0] < 0.5, size - 1 - cols, cols)
        if augment.rot90:  # k quarter turns as tf.image.rot90: out[i, j] = in[j, size - 1 - i]
            for k in range(1, 4):
                turn = tf.cast(draws[1] * 4, tf.int32) >= k
                rows, cols = tf.where(turn, cols, rows), tf.where(turn, size - 1 - rows, cols)
    flat = tf.reshape(stacked, [height * width, stacked.shape[-1]])
    index = (top[:, None, None] + rows[None]) * width + left[:, None, None] + cols[None]
    return tf.gather(flat, index)  # (count, size, size, C)


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
