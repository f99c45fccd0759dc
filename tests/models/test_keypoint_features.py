"""Keypoint features hold across position and size, read joint angles right, and treat absence as zeros."""

from __future__ import annotations

import numpy as np
import pytest

from dcrn.models import keypoint_features as kf


def open_hand(wrist=(100.0, 200.0), scale=1.0) -> np.ndarray:
    """An upright open hand in frame pixels: five straight fingers fanning upwards from the wrist."""
    points = np.zeros((21, 3))
    points[0, :2] = wrist
    for finger, tilt in enumerate(np.linspace(-0.6, 0.6, 5)):
        direction = np.array([np.sin(tilt), -np.cos(tilt)])
        for joint in range(4):
            points[1 + 4 * finger + joint, :2] = np.asarray(wrist) + scale * (30 + 12 * joint) * direction
    return points


def standing_body(hips=(320.0, 300.0), scale=1.0) -> np.ndarray:
    """A person standing upright, arms hanging straight, in frame pixels."""
    points = np.zeros((33, 3))
    x, y = hips
    offsets = {0: (0, -130), 11: (20, -100), 12: (-20, -100), 13: (22, -55), 14: (-22, -55), 15: (24, -10)}
    offsets |= {16: (-24, -10), 23: (12, 0), 24: (-12, 0), 25: (12, 60), 26: (-12, 60), 27: (12, 120)}
    offsets |= {28: (-12, 120)}
    for index in range(33):
        dx, dy = offsets.get(index, (0, -125))  # face, hands and feet not placed: near the head
        points[index, :2] = (x + scale * dx, y + scale * dy)
    return points


def test_hand_features_do_not_change_with_position_or_size():
    near = kf.hand_features(open_hand((100, 200), scale=1.0))
    far = kf.hand_features(open_hand((500, 80), scale=0.4))
    assert near.shape == (kf.HAND_DIM,) and near[0] == 1.0
    np.testing.assert_allclose(near, far, atol=1e-5)


def test_straight_fingers_do_not_bend_and_a_curled_one_does():
    hand = open_hand()
    assert np.allclose(kf.joint_bends(hand)[3:], 0, atol=1e-6)  # the four fingers are straight lines
    curled = hand.copy()
    curled[8, :2] = curled[6, :2] + (curled[5, :2] - curled[6, :2]) * 0.5  # the index fingertip folds back
    bends = kf.joint_bends(curled)
    assert bends[5] > 2.5  # the index finger's last joint bends nearly all the way


def test_the_palm_direction_tells_up_from_down():
    up = kf.hand_features(open_hand())
    down_hand = open_hand()
    down_hand[:, 1] = 2 * down_hand[0, 1] - down_hand[:, 1]  # mirrored vertically about the wrist
    down = kf.hand_features(down_hand)
    assert up[-1] < -0.9 and down[-1] > 0.9  # picture y points down


def test_body_features_are_relative_to_the_hips_in_torso_lengths():
    near = kf.body_features(standing_body((320, 300), 1.0))
    far = kf.body_features(standing_body((100, 150), 0.3))
    np.testing.assert_allclose(near, far, atol=1e-5)
    centre, scale = kf.body_centre_scale(standing_body())
    np.testing.assert_allclose(centre, (320, 300))
    assert scale == pytest.approx(100)


def test_straight_limbs_read_as_straight_angles():
    angles = kf.limb_angles(standing_body())
    elbows, knees = angles[:2], angles[6:]
    assert np.all(elbows > 3.0) and np.all(knees > 3.1)


def test_a_lying_body_points_its_torso_sideways():
    body = standing_body()
    lying = body.copy()
    lying[:, 0], lying[:, 1] = 320 + (body[:, 1] - 300), 300 - (body[:, 0] - 320)  # a quarter turn
    upright = kf.body_features(body)[-2:]
    sideways = kf.body_features(lying)[-2:]
    assert upright[1] < -0.99 and abs(sideways[1]) < 0.05 and abs(sideways[0]) > 0.99


def test_nobody_in_view_gives_zeros_never_an_error():
    assert not kf.body_features(None).any() and not kf.hand_features(None).any()
    assert kf.body_features(None).shape == (kf.BODY_DIM,)
    collapsed = np.zeros((33, 3))  # every landmark on one point: no size to measure by
    assert not kf.body_features(collapsed).any()


def test_motion_is_zero_when_the_body_appears_and_follows_it_after():
    first, second = kf.body_features(standing_body((320, 300))), kf.body_features(standing_body((320, 300)))
    assert not kf.motion(first, None).any()
    assert not kf.motion(first, kf.body_features(None)).any()  # appearing is not motion
    assert not kf.motion(second, first).any()
    fall = kf.centre_velocity(np.array([320.0, 340.0]), np.array([320.0, 300.0]), scale=100.0)
    np.testing.assert_allclose(fall, [0.0, 0.4])  # 0.4 torso lengths down in one frame
    assert not kf.centre_velocity(None, np.array([1.0, 2.0]), 100.0).any()


def test_landmarks_of_the_wrong_shape_are_refused_with_both_shapes_named():
    with pytest.raises(ValueError, match=r"\(21, 2 or 3\), got \(20, 3\)"):
        kf.hand_features(np.zeros((20, 3)))
    with pytest.raises(ValueError, match=r"visibility must be \(33,\)"):
        kf.body_features(standing_body(), visibility=np.ones(5))
