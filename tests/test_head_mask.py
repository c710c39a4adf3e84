"""The head mask (GrabCut seeded by the fit) and what it changes in the warp: the hair moves to
its edge, the background beside it stays still."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from faceanime.fitting import fit_image
from faceanime.render.frames import to_uint8
from faceanime.render.head_mask import head_mask, seed_ellipse
from faceanime.render.warp import WarpConfig, WarpRenderer

pytest.importorskip("cv2", reason="the head mask needs OpenCV (opencv-python-headless)")


def test_a_drawn_head_is_found_to_its_hair():
    """Ground truth: a grey background, a dark 'hair' disc much larger than the seed ellipse on
    one side, and a skin-coloured face inside it; the face's outline is given as its points."""
    image = Image.new("RGB", (320, 320), (150, 155, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((70, 30, 250, 230), fill=(70, 45, 30))     # hair, wide above the face
    draw.ellipse((115, 90, 205, 210), fill=(225, 180, 150))  # face
    truth = np.zeros((320, 320), bool)
    ys, xs = np.mgrid[:320, :320]
    truth |= ((xs - 160) / 90) ** 2 + ((ys - 130) / 100) ** 2 <= 1
    truth |= ((xs - 160) / 45) ** 2 + ((ys - 150) / 60) ** 2 <= 1
    angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    face = np.stack([160 + 44 * np.cos(angles), 150 + 59 * np.sin(angles)], 1)
    mask = head_mask(np.array(image), face)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    seed = seed_ellipse(face, (320, 320))
    assert (seed & truth).sum() / (seed | truth).sum() < 0.8  # the seed alone is far off


def test_the_mask_holds_the_face_and_not_the_top_border(sfm_model, data_dir):
    for name in ("s1", "s12", "s42", "d19"):
        image = np.array(Image.open(data_dir / "faces" / f"{name}.jpg").convert("RGB")
                         .resize((512, 512)))
        coeffs = fit_image(image, sfm_model)
        face = coeffs.fitted_landmarks[0].numpy()
        face = face[np.isfinite(face).all(1)]
        mask = head_mask(image, face)
        assert np.array_equal(mask, head_mask(image, face)), name  # deterministic
        inner = face[17:] if len(face) > 17 else face  # brows, eyes, nose, mouth
        assert mask[inner[:, 1].round().astype(int), inner[:, 0].round().astype(int)].all(), name
        assert not mask[:5].any(), name
        # Some of the seed ellipse was given up, or some beyond it taken: GrabCut decided.
        seed = seed_ellipse(face, mask.shape)
        assert (mask != seed).mean() > 0.01, name


def test_background_beside_the_head_stays_still(sfm_model, data_dir):
    """s42 (a waterfall close beside the head) with the head moved 12 px right: beyond the
    head's edge plus the fade band, nothing moves; with the ellipse alone, the background there
    is dragged."""
    image = np.array(Image.open(data_dir / "faces" / "s42.jpg").convert("RGB").resize((512, 512)))
    coeffs = fit_image(image, sfm_model)
    target = coeffs.frames([0])
    target.translation = target.translation.clone()
    target.translation[:, 0] += 12.0
    segmented = WarpRenderer(sfm_model, image, coeffs)
    face = segmented.source_screen[:segmented.n_face_vertices, :2].double().numpy()
    # Beyond the fade band (twice the motion) plus the motion itself (an output pixel takes
    # the weight where it fetches from) plus the coarse grid's cells.
    far = ndimage.distance_transform_edt(~head_mask(image, face)) > 2 * 12 + 12 + 3 * 4
    top = face[:, 1].min()
    region = far.copy()
    region[int(top):] = False  # above the face's top: hair and background only
    assert region.sum() > 5000
    moved = np.abs(to_uint8(segmented.render(target))[0].astype(int) - image).max(-1)
    assert moved[region].max() <= 1
    ellipse = WarpRenderer(sfm_model, image, coeffs, WarpConfig(segment=False))
    dragged = np.abs(to_uint8(ellipse.render(target))[0].astype(int) - image).max(-1)
    assert (dragged[region] > 8).mean() > 0.05
