import math

import pytest
import torch

from metagan_lib import evaluation as E


def clusters(seed=0, n=200, d=8, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + offset


def test_frechet_distance_known_answers():
    x = clusters(0)
    assert abs(E.frechet_distance(x, x)) < 1e-6
    # two Gaussians with equal covariance: FD = squared distance of the means
    shifted = x + torch.tensor([3.0] + [0.0] * 7, dtype=torch.float64)
    assert math.isclose(E.frechet_distance(x, shifted), 9.0, rel_tol=1e-6)
    # scaled copy x -> 2x: FD = ||mu||^2 + tr(S) (1 - 2)^2
    scaled = x * 2
    expected = x.mean(0).pow(2).sum().item() + torch.cov(x.T).trace().item() * (1 - 2) ** 2
    assert math.isclose(E.frechet_distance(x, scaled), expected, rel_tol=1e-6)
    assert E.frechet_distance(x, clusters(1)) < E.frechet_distance(x, clusters(1, offset=1.0))


def test_precision_recall_identical_and_disjoint_sets():
    x = clusters(0)
    assert E.precision_recall(x, x) == (1.0, 1.0)
    far = clusters(1, offset=100.0)
    assert E.precision_recall(x, far) == (0.0, 0.0)
    # a generator covering one of two real modes: high precision, recall about one half
    two_modes = torch.cat([clusters(2, n=100, d=2), clusters(3, n=100, d=2, offset=50.0)])
    precision, recall = E.precision_recall(two_modes, clusters(4, n=100, d=2))
    assert precision > 0.9 and 0.4 < recall < 0.6


def test_coverage_rewards_landing_next_to_many_real_points_not_scattering():
    real = clusters(0, n=100, d=2)
    assert E.coverage(real, real) == 1.0 and E.coverage(real, clusters(1, n=100, d=2, offset=100.0)) == 0.0
    second_sample = E.coverage(real, clusters(1, n=100, d=2))
    assert second_sample > 0.8  # a new sample of the same distribution covers most real points
    one_point = E.coverage(real, real[:1].repeat(100, 1))  # collapsed onto one real image: its own ball and few more
    assert one_point <= 0.1
    # fakes scattered ten times wider: recall counts nearly every real point inside their (wide) balls,
    # coverage only the real points that have a fake in their own k-NN ball
    scattered = clusters(2, n=100, d=2) * 10
    assert E.precision_recall(real, scattered)[1] > 0.9 and E.coverage(real, scattered) < 0.5 < second_sample


def test_diversity_fidelity_and_memorisation():
    x = clusters(0, n=50)
    assert E.mean_pairwise_distance(x * 0) == 0.0
    assert E.mean_pairwise_distance(x * 2) == pytest.approx(2 * E.mean_pairwise_distance(x))
    prototypes = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    fake = torch.tensor([[1.0, 0.0], [9.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    assert E.class_fidelity(fake, torch.tensor([0, 1, 1]), prototypes) == pytest.approx(2 / 3)
    shots, held_out = clusters(5, n=5), clusters(6, n=50)
    copies = shots.repeat(10, 1) + 1e-4 * clusters(7, n=50)
    assert E.copy_score(copies, held_out, shots) == pytest.approx(
        55 / 5
    )  # every nearest neighbour is a shot: (K + R) / K
    assert E.copy_score(copies, held_out, shots) > E.COPY_FLAG  # flagged
    new_instances = [E.copy_score(clusters(100 + s, n=50), held_out, shots) for s in range(20)]
    # about chance (1) on average, so not flagged; one draw of 50 against 5 shots is coarse (5 of these 20 exceed 1.5),
    # which is why the protocol averages the score over classes and seeds before flagging
    assert 0.6 < sum(new_instances) / 20 < 1.4


def test_confidence_intervals_shrink_with_more_seeds():
    g = torch.Generator().manual_seed(0)
    values = (torch.randn(200, generator=g) * 0.1 + 0.5).tolist()
    widths = [E.mean_confidence_interval(values[:n]).half_width for n in (3, 5, 20, 200)]
    assert widths == sorted(widths, reverse=True)
    estimate = E.mean_confidence_interval([1.0, 2.0, 3.0])
    assert estimate.mean == 2.0 and estimate.half_width == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    # t quantiles from printed tables: 4 degrees of freedom (5 seeds) 2.776, 40 degrees 2.021
    assert E.mean_confidence_interval([0.0, 1.0, 0.0, 1.0, 0.5]).half_width == pytest.approx(
        2.776 * math.sqrt(0.25 / 5), rel=1e-3
    )
    forty_one = [float(i % 2) for i in range(41)]
    sd = torch.tensor(forty_one).std().item()
    assert E.mean_confidence_interval(forty_one).half_width == pytest.approx(2.021 * sd / math.sqrt(41), rel=1e-3)


def test_feature_net_trains_on_seen_classes_only_and_beats_chance(glyphs, monkeypatch):
    seen_rows = torch.isin(glyphs.labels, glyphs.seen_classes)
    original_subset = type(glyphs).subset
    requested = []

    def spy(self, classes):
        requested.append(classes.clone())
        return original_subset(self, classes)

    monkeypatch.setattr(type(glyphs), "subset", spy)
    net = E.train_feature_net(glyphs, steps=60, progress=False)
    assert requested and all(set(c.tolist()) <= set(glyphs.seen_classes.tolist()) for c in requested)
    assert seen_rows.sum() < len(glyphs.labels)  # the fixture has unseen rows, so the spy's check above can fail
    accuracy = sum(E.few_shot_accuracy(net, glyphs, ways=5, shots=5, episodes=20)) / 20
    assert accuracy > 0.4  # chance is 0.2


def test_sample_quality_of_a_copy_and_of_a_collapsed_generator():
    torch.manual_seed(0)
    net = E.FeatureNet(5).eval()
    real = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        copy = E.sample_quality(net, real, real)
        collapsed = E.sample_quality(net, torch.full((64, 1, 28, 28), -1.0), real)
    assert abs(copy["frechet_distance"]) < 1e-4 and copy["precision"] == copy["recall"] == 1.0
    assert copy["diversity"] == pytest.approx(copy["real_diversity"])
    # every generated image is the same blank image: no diversity (up to float noise), and no real image lies in its
    # manifold
    assert collapsed["diversity"] < 0.01 * copy["real_diversity"] and collapsed["recall"] == 0.0
    assert collapsed["frechet_distance"] > copy["frechet_distance"] + 1e-3
