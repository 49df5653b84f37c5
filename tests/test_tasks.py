import pytest
import torch

from metagan_lib.images import to_signed, to_unit
from metagan_lib.tasks import TaskSampler


@pytest.fixture(scope="module")
def sampler(glyphs):
    return TaskSampler(glyphs, glyphs.unseen_classes, device="cpu", seed=0)


def test_episode_shapes_range_and_classes(sampler, glyphs):
    episode = sampler.sample(tasks=4, ways=5, shots=3, queries=2)
    assert episode.support.shape == (4, 5, 3, 1, 28, 28)
    assert episode.query.shape == (4, 5, 2, 1, 28, 28)
    assert episode.classes.shape == (4, 5)
    assert episode.support.min() >= -1 and episode.support.max() <= 1
    assert set(episode.classes.flatten().tolist()) <= set(glyphs.unseen_classes.tolist())
    for task in episode.classes:  # N distinct classes per task
        assert len(set(task.tolist())) == 5


def test_support_and_query_images_come_from_their_class_and_never_overlap(sampler, glyphs):
    images, labels = glyphs.subset(glyphs.unseen_classes)
    episode = sampler.sample(tasks=8, ways=5, shots=5, queries=10)
    for t in range(8):
        for n in range(5):
            support, query = set(episode.support_index[t, n].tolist()), set(episode.query_index[t, n].tolist())
            assert len(support) == 5 and len(query) == 10 and not support & query
            assert set(labels[list(support | query)].tolist()) == {int(episode.classes[t, n])}
    assert torch.equal(episode.support, to_signed(images[episode.support_index]))
    assert torch.equal(episode.query, to_signed(images[episode.query_index]))  # the query images are the indexed ones


def test_classes_of_different_sizes_never_draw_padding_or_another_class(constant_classes):
    """Classes of 3 to 9 images (Omniglot and MNIST classes differ in size): the sampler pads its index table, and
    with shots + queries equal to the smallest class every class must still give its own distinct images."""
    dataset = constant_classes([3, 9, 5, 7, 4], seen=5)
    labels = dataset.labels
    sampler = TaskSampler(dataset, dataset.seen_classes, seed=0)
    assert sampler.min_count == 3
    episode = sampler.sample(tasks=50, ways=5, shots=2, queries=1)
    index = torch.cat([episode.support_index, episode.query_index], dim=2)  # [T, N, 3], rows of the sampler's images
    assert index.min() >= 0
    for t in range(50):
        for n in range(5):
            assert len(set(index[t, n].tolist())) == 3
            assert set(labels[index[t, n]].tolist()) == {int(episode.classes[t, n])}
    expected_pixel = to_signed((episode.classes * 30).to(torch.uint8)).view(50, 5, 1, 1, 1, 1)
    assert torch.equal(episode.support, expected_pixel.expand_as(episode.support))
    nine = index[episode.classes == 1].flatten()  # the large class: over 50 tasks, every one of its images is drawn
    assert len(set(nine.tolist())) == 9


def test_sampling_is_seeded(glyphs):
    a = TaskSampler(glyphs, glyphs.seen_classes, seed=7).sample(3, 5, 1, 1)
    b = TaskSampler(glyphs, glyphs.seen_classes, seed=7).sample(3, 5, 1, 1)
    c = TaskSampler(glyphs, glyphs.seen_classes, seed=8).sample(3, 5, 1, 1)
    assert torch.equal(a.support, b.support) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.classes, c.classes)


def test_k_larger_than_a_class_holds_is_a_clear_error(sampler):
    with pytest.raises(ValueError, match=r"K=15 shots \+ 10 query images = 25.*holds 20; lower K"):
        sampler.sample(tasks=1, ways=5, shots=15, queries=10)
    with pytest.raises(ValueError, match="lower the number of ways"):
        sampler.sample(tasks=1, ways=10_000, shots=1)


def test_an_unknown_device_name_is_refused_with_the_choices(glyphs):
    with pytest.raises(ValueError, match="Unknown device 'gpu'; choose one of auto, cpu, cuda"):
        TaskSampler(glyphs, glyphs.seen_classes, device="gpu")
    assert TaskSampler(glyphs, glyphs.seen_classes, device="CPU").device == torch.device("cpu")


def test_value_conversions_round_trip():
    raw = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.allclose(to_unit(to_signed(raw)) * 255, raw.float(), atol=1e-4)


def test_a_restarted_sampler_draws_what_a_new_one_draws(glyphs):
    used = TaskSampler(glyphs, glyphs.unseen_classes, seed=3)
    first = used.sample(2, 3, 2, 1)
    used.sample(5, 3, 2, 1)  # drawn past the start
    again = used.restarted().sample(2, 3, 2, 1)
    assert torch.equal(again.support_index, first.support_index) and torch.equal(again.query_index, first.query_index)
    assert torch.equal(again.support, TaskSampler(glyphs, glyphs.unseen_classes, seed=3).sample(2, 3, 2, 1).support)
    assert not torch.equal(used.sample(2, 3, 2, 1).support_index, first.support_index)  # the original goes on
