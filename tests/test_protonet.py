import pytest
import torch
import torch.nn.functional as F

from metagan_lib import evaluation as E
from metagan_lib import protonet as P
from metagan_lib.tasks import TaskSampler


def test_prototypes_and_logits_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(4, 3, 8, generator=g), torch.randn(6, 8, generator=g)
    prototypes = P.prototypes(support)
    for k in range(4):
        torch.testing.assert_close(prototypes[k], sum(support[k, i] for i in range(3)) / 3)
    logits = P.prototype_logits(query, prototypes)
    direct = torch.tensor(
        [[-sum((query[q, j] - prototypes[k, j]) ** 2 for j in range(8)) for k in range(4)] for q in range(6)]
    )
    torch.testing.assert_close(logits, direct, rtol=1e-5, atol=1e-5)


def test_episode_loss_is_the_queries_cross_entropy_under_the_prototype_softmax(strokes):
    net = P.ProtoNet()
    episode = TaskSampler(strokes, strokes.seen_classes, seed=1).sample(1, ways=4, shots=3, queries=2)
    support, query = episode.support[0], episode.query[0]
    loss, accuracy = P.episode_loss(net, support, query)
    f_support = torch.stack([net.body(support[k]) for k in range(4)])  # [4, 3, d], encoded class by class
    c = f_support.mean(1)
    nll, correct = [], 0
    for k in range(4):
        for q in range(2):
            distances = ((net.body(query[k, q : q + 1]) - c) ** 2).sum(1)  # [4]
            log_p = -distances - torch.logsumexp(-distances, 0)
            nll.append(-log_p[k])
            correct += int(distances.argmin() == k)
    torch.testing.assert_close(loss, torch.stack(nll).mean(), rtol=1e-4, atol=1e-4)
    assert accuracy == pytest.approx(correct / 8)


def test_protonet_training_is_seeded_uses_seen_classes_and_beats_chance_on_unseen(strokes, monkeypatch):
    requested = []
    original = TaskSampler.__init__

    def spy(self, dataset, classes, **kwargs):
        requested.append(torch.as_tensor(classes).tolist())
        original(self, dataset, classes, **kwargs)

    monkeypatch.setattr(TaskSampler, "__init__", spy)
    net = P.train_protonet(strokes, 40, ways=6, shots=3, queries=3, progress=False)
    assert requested == [strokes.seen_classes.tolist()]
    again = P.train_protonet(strokes, 40, ways=6, shots=3, queries=3, progress=False)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.setattr(TaskSampler, "__init__", original)
    accuracy = sum(E.few_shot_accuracy(net, strokes, ways=4, shots=3, episodes=10, queries=3)) / 10
    assert accuracy > 0.6  # chance is 0.25


def test_protonet_cache_round_trip(strokes, tmp_path, monkeypatch):
    path = tmp_path / "protonet.pt"
    net = P.train_or_load_protonet(path, strokes, 3, progress=False)
    monkeypatch.setattr(P, "train_protonet", lambda *a, **k: pytest.fail("the cached network was trained again"))
    loaded = P.train_or_load_protonet(path, strokes, 3, progress=False)
    images = torch.rand(5, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(net.embed(images), loaded.embed(images), rtol=0, atol=0)
    assert not F.normalize(net.embed(images), dim=1).allclose(net.embed(images))  # raw features, not unit vectors


@pytest.mark.parametrize(
    "bad, match",
    [({"episodes": 0}, "episodes"), ({"queries": 0}, "queries"), ({"lr": 0.0}, "lr"), ({"device": "CPU "}, None)],
)
def test_training_settings_that_train_nothing_are_refused(strokes, bad, match):
    settings = {"episodes": 1, "ways": 3, "shots": 1, "queries": 1, "progress": False, **bad}
    episodes = settings.pop("episodes")
    if match is None:  # a device name in any case is taken
        assert P.train_protonet(strokes, episodes, **settings) is not None
        return
    with pytest.raises(ValueError, match=match):
        P.train_protonet(strokes, episodes, **settings)
