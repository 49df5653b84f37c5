import pytest
import torch
from torch.distributions import Normal, kl_divergence

from metagan_lib import fewshot, losses
from metagan_lib import vae as V
from metagan_lib.images import to_signed


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(V.gaussian_kl(mu, logvar), expected)
    assert torch.all(V.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


def test_reconstruction_nll_is_the_bernoulli_log_likelihood():
    g = torch.Generator().manual_seed(1)
    decoded, images = torch.rand(3, 1, 28, 28, generator=g) * 1.8 - 0.9, torch.rand(3, 1, 28, 28, generator=g) * 2 - 1
    p, t = (decoded + 1) / 2, (images + 1) / 2
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(V.reconstruction_nll(decoded, images), expected)


def test_elbo_terms_use_the_reparameterisation():
    vae = V.VAE(z_dim=4, width=8)
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    mu, logvar = vae.encode(images)
    eps = torch.randn(2, 4)
    nll, kl, decoded = V.elbo_terms(vae, images, eps)
    torch.testing.assert_close(decoded, vae(mu + (0.5 * logvar).exp() * eps))
    torch.testing.assert_close(nll, V.reconstruction_nll(decoded, images))
    torch.testing.assert_close(kl, V.gaussian_kl(mu, logvar))


def test_vae_and_vae_gan_training_lowers_the_negative_elbo_and_is_seeded(strokes):
    images, _ = strokes.subset(strokes.seen_classes)
    batch = to_signed(images[:32])
    eps = torch.zeros(32, 8)
    negative_elbo = lambda vae: sum(V.elbo_terms(vae, batch, eps)[:2]).mean().item()
    for weight in (0.0, 1.0):
        config = V.VAEConfig(steps=60, batch_size=16, z_dim=8, width=8, adversarial_weight=weight)
        trained = V.train_vae(images, config, seed=3, progress=False)
        untrained = V.train_vae(images, config.__class__(**{**config.__dict__, "steps": 0}), seed=3, progress=False)
        assert negative_elbo(trained) < 0.9 * negative_elbo(untrained)
        again = V.train_vae(images, config, seed=3, progress=False)
        assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))


def test_a_vae_gan_step_descends_the_elbo_plus_the_weighted_adversarial_loss_after_one_critic_step(strokes):
    images, _ = strokes.subset(strokes.seen_classes)
    real, g = to_signed(images[:8]).double(), torch.Generator().manual_seed(0)  # float64: exact comparisons
    eps, prior = (
        torch.randn(8, 8, generator=g, dtype=torch.float64),
        torch.randn(8, 8, generator=g, dtype=torch.float64),
    )
    config = V.VAEConfig(z_dim=8, width=8)

    def networks():
        vae, critic, _ = V.new_vae(config, seed=1)
        return vae.double(), critic.double()

    def step(weight):  # the library's step with plain SGD (rate 1 for the VAE: its change is minus its gradient)
        vae, critic = networks()
        sgd = (torch.optim.SGD(vae.parameters(), lr=1.0), torch.optim.SGD(critic.parameters(), lr=0.1))
        before = [p.detach().clone() for p in vae.parameters()]
        V.training_step(vae, critic, sgd, real, eps, prior, weight)
        return [b - p.detach() for b, p in zip(before, vae.parameters())]

    def reference(weight):  # written out: one critic step on real vs decoded + prior samples, then the VAE's loss
        vae, critic = networks()
        nll, kl, decoded = V.elbo_terms(vae, real, eps)
        fake = torch.cat([decoded, vae(prior)])
        critic_loss = losses.discriminator_loss(critic(real), critic(fake.detach()))
        for p, grad in zip(critic.parameters(), torch.autograd.grad(critic_loss, list(critic.parameters()))):
            p.data -= 0.1 * grad
        loss = (nll + kl).mean() + weight * torch.nn.functional.softplus(-critic(fake)).mean()
        return torch.autograd.grad(loss, list(vae.parameters()))

    for weight in (0.0, 2.0):
        for got, want in zip(step(weight), reference(weight)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert not all(torch.allclose(a, b) for a, b in zip(step(0.0), step(2.0)))  # the adversarial term moves the VAE


def test_vae_few_shot_sampling_is_per_class_and_refinement_improves_reconstruction(strokes, tmp_path, monkeypatch):
    images, _ = strokes.subset(strokes.seen_classes)
    config = V.VAEConfig(steps=20, batch_size=16, z_dim=8, width=8)
    vae = V.train_or_load_vae(tmp_path / "vae.pt", images, config, progress=False)
    with monkeypatch.context() as patched:  # a cache hit loads the trained weights, it never trains
        patched.setattr(V, "train_vae", lambda *a, **k: pytest.fail("the cached VAE was trained again"))
        loaded = V.train_or_load_vae(tmp_path / "vae.pt", images, config, progress=False)
    trained, reloaded = vae.state_dict(), loaded.state_dict()
    assert trained.keys() == reloaded.keys() and all(torch.equal(trained[k], reloaded[k]) for k in trained)
    shots = to_signed(strokes.subset(strokes.unseen_classes)[0][:12]).view(3, 4, 1, 28, 28)
    few = V.VAEFewShot(vae, noise_scale=0.5)
    vae.zero_grad(set_to_none=True)  # what training left
    both = V.adapt_and_sample(few, shots, steps=5, n=6, seed=7)
    assert both.shape == (3, 6, 1, 28, 28) and both.abs().max() <= 1
    assert all(p.grad is None for p in vae.parameters())  # refining the latents leaves the trained VAE untouched
    # a class's images do not depend on which other classes are adapted beside it
    torch.testing.assert_close(V.adapt_and_sample(few, shots[:1], steps=5, n=6, seed=7)[0], both[0])
    flat = shots.flatten(0, 1)
    nll = lambda steps: V.reconstruction_nll(vae(V.encode_shots(few, shots, steps)[0].flatten(0, 1)), flat).mean()
    assert nll(20) < nll(0)
    exact = V.VAEFewShot(vae, noise_scale=0.0)
    mu, _ = vae.encode(flat)
    torch.testing.assert_close(V.adapt_and_sample(exact, shots, 0, 4, seed=0).flatten(0, 1), vae(mu).detach())
    method = fewshot.Method("VAE", kind="vae", model=few, steps=5)
    torch.testing.assert_close(fewshot.generate(method, shots, None, 6, None, seed=7), both)


def test_training_images_a_vae_cannot_learn_from_are_refused_before_training():
    with pytest.raises(ValueError, match=r"look like images in \[0, 1\]; convert them with x \* 2 - 1"):
        V.train_vae(torch.rand(10, 1, 28, 28), V.VAEConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match=r"must have shape \[batch, 1, 28, 28\]"):
        V.train_vae(torch.zeros(10, 3, 28, 28, dtype=torch.uint8), V.VAEConfig(steps=1), progress=False)
