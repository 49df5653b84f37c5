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


def _frechet_by_eigenvalues(a, b):
    """The reference: ``tr((S_a S_b)^(1/2)) = sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2)))`` (a symmetric matrix), with
    ``S`` the unbiased covariances; independent of the library's SVD route."""
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    root_a = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    trace_root = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return ((a.mean(0) - b.mean(0)).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root).item()


@pytest.mark.parametrize("sizes", [(300, 120, 6), (7, 5, 10)])  # (n_a, n_b, d): many points, and fewer points than d
def test_frechet_distance_equals_the_eigenvalue_formula_when_covariances_do_not_commute(sizes):
    n_a, n_b, d = sizes
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n_a, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(n_b, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64) + 1
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    assert not torch.allclose(cov_a @ cov_b, cov_b @ cov_a, atol=1e-3)  # the case the shifted/scaled copies miss
    assert E.frechet_distance(a, b) == pytest.approx(_frechet_by_eigenvalues(a, b), rel=1e-8)
    assert E.frechet_distance(b, a) == pytest.approx(E.frechet_distance(a, b), rel=1e-10)


def test_k_nearest_neighbour_balls_on_a_line_worked_by_hand():
    """k = 1 on a line: real 0, 1, 3, 7 have radii 1, 1, 2, 4 (their nearest *other* real point); fakes 2.5, 5.5, 12
    have radii 3, 3, 6.5. Precision: 2.5 (in 3's ball) and 5.5 (in 7's), not 12: 2/3. Recall: every real point is
    within 3 of 2.5 or 5.5: 1. Coverage: the balls of 3 and 7 hold a fake, those of 0 and 1 do not: 1/2."""
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    fake = torch.tensor([[2.5], [5.5], [12.0]], dtype=torch.float64)
    precision, recall = E.precision_recall(real, fake, k=1)
    assert (precision, recall) == (pytest.approx(2 / 3), 1.0)
    assert E.coverage(real, fake, k=1) == 0.5
    # k = 2: radii 3, 2, 3, 6 -> the balls of 0 and 1 now reach 2.5, and 12 lies 5 from 7 (inside 6): both 1
    assert E.precision_recall(real, fake, k=2)[0] == 1.0 and E.coverage(real, fake, k=2) == 1.0


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
    line = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)  # pairs at 1, 3 and 2: the mean of distinct pairs
    assert E.mean_pairwise_distance(line) == pytest.approx(2.0) and E.mean_pairwise_distance(line[:1]) == 0.0
    prototypes = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    fake = torch.tensor([[1.0, 0.0], [9.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    assert E.class_fidelity(fake, torch.tensor([0, 1, 1]), prototypes) == pytest.approx(2 / 3)
    shots, held_out = clusters(5, n=5), clusters(6, n=50)
    copies = shots.repeat(10, 1) + 1e-4 * clusters(7, n=50)
    assert E.copy_score(copies, held_out, shots) == pytest.approx(
        55 / 5
    )  # every nearest neighbour is a shot: (K + R) / K
    assert E.copy_score(copies, held_out, shots) > E.COPY_FLAG  # flagged
    # copies of held-out images (the first one among them) have no shot as nearest neighbour: 0; a half-and-half mix
    # of shot and held-out copies: half the (K + R) / K of pure shot copies
    held_out_copies = held_out[[0, 0, 1, 2]] + 1e-4
    assert E.copy_score(held_out_copies, held_out, shots) == 0.0
    assert E.copy_score(torch.cat([held_out_copies, shots[:4]]), held_out, shots) == pytest.approx(55 / 5 / 2)
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


def test_metrics_refuse_what_is_not_a_feature_set_by_name():
    """Images, mismatched widths, empty sets, bad labels: a message naming the argument and the fix, not torch's
    "mat1 and mat2 shapes cannot be multiplied" nor a silent nan or broadcast."""
    a, b = clusters(0, n=10, d=8), clusters(1, n=10, d=4)
    images = torch.rand(10, 1, 28, 28) * 2 - 1
    for call, named in (
        (lambda: E.frechet_distance(a, b), "feature widths"),
        (lambda: E.frechet_distance(images, images), r"a.shape=\(10, 1, 28, 28\).*embed images first"),
        (lambda: E.frechet_distance(a[:0], a), "a.shape=.*non-empty features"),
        (lambda: E.precision_recall(a, b), "feature widths"),
        (lambda: E.precision_recall(a, a, k=0), "k=0 is not accepted"),
        (lambda: E.coverage(a[:0], a), "real.shape"),
        (lambda: E.copy_score(a, a, a[:0]), "shots.shape"),
        (lambda: E.mean_pairwise_distance(a.view(2, 5, 8)), r"x.shape=\(2, 5, 8\)"),
        (lambda: E.class_fidelity(a, torch.zeros(10, 1, dtype=torch.long), a[:2]), "fake_labels"),
        (lambda: E.class_fidelity(a, torch.full((10,), 2), a[:2]), r"fake_labels.*in \[0, 2\)"),
        (lambda: E.class_fidelity(a, torch.zeros(10), a[:2]), "integer class indices"),
        (lambda: E.mean_confidence_interval([]), "non-empty list of numbers"),
        (lambda: E.mean_confidence_interval(torch.tensor([0.1, 0.2])), "floats, not tensors"),
    ):
        with pytest.raises(ValueError, match=named):
            call()
    with pytest.raises(TypeError, match="a must be a torch.Tensor of features"):
        E.frechet_distance(a.numpy(), a)


def test_embed_refuses_what_it_cannot_read_as_images_by_name():
    net = E.FeatureNet(num_classes=3)
    assert E.embed(net, torch.ones(2, 1, 28, 28)).shape == (2, 128)  # all white (a collapsed generator): accepted
    with pytest.raises(ValueError, match=r"images must have shape \[batch, 1, 28, 28\].*got \[2, 1, 32, 32\]"):
        E.embed(net, torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images range=\(0.0, 255.0\).*x / 127.5 - 1"):
        E.embed(net, torch.tensor([0.0, 255.0]).repeat_interleave(784).view(2, 1, 28, 28))
    with pytest.raises(TypeError, match="torch.from_numpy"):
        E.embed(net, torch.zeros(2, 1, 28, 28).numpy())


def test_embed_in_batches_equals_one_batch_and_reads_uint8_as_signed():
    torch.manual_seed(0)
    net = E.FeatureNet(num_classes=3).eval()
    images = torch.randint(0, 256, (7, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    signed = images.float() / 127.5 - 1
    whole = E.embed(net, signed, batch_size=512)
    assert not whole.requires_grad  # features only: no graph kept through the network
    torch.testing.assert_close(E.embed(net, signed, batch_size=3), whole)  # batches of 3 + 3 + 1
    torch.testing.assert_close(E.embed(net, images), whole)  # uint8 0-255 read as [-1, 1]
    with torch.no_grad():
        torch.testing.assert_close(whole, net.embed(signed))
