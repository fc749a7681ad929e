"""Representation similarity (generator/similarity.py) against formulas written out here: linear CKA and its
invariances (Kornblith et al. 2019), the unbiased HSIC against Song et al.'s formula and U-statistic written as loops,
minibatch CKA (Nguyen et al. 2021) against full-batch CKA, a network whose channels are permuted, and the correlations
against numpy / scipy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from helpers import permuted_twin
from generator.similarity import MinibatchCKA, channel_correlation, linear_cka, matching, spearman, unbiased_hsic

pytestmark = pytest.mark.usefixtures("one_thread")


def direct_cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (feature space): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred X, Y."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def direct_cka_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC(K, L) = tr(K H L H) / (n − 1)², K = X Xᵀ, H = I − 11ᵀ/n, on uncentred X, Y, as the paper writes it."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def correlated(rng: np.random.Generator, n: int, d: int, e: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d)) + 3.0  # a mean far from 0, as ReLU features have
    y = x @ (rng.standard_normal((d, e)) / np.sqrt(d)) + noise * rng.standard_normal((n, e))
    return x, y


# Linear CKA ---------------------------------------------------------------------------------------------------------


def test_cka_of_a_representation_with_itself_is_one():
    x = np.random.default_rng(0).standard_normal((50, 20))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), x) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x, y = correlated(rng, 100, 30, 20)
    base = linear_cka(x, y)
    assert 0.1 < base < 0.95
    assert linear_cka(x @ random_orthogonal(30, rng), y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ random_orthogonal(20, rng)) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-10)


def test_cka_is_not_invariant_to_a_general_invertible_linear_map():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 20))
    a = random_orthogonal(20, rng) @ np.diag(np.logspace(0, -3, 20)) @ random_orthogonal(20, rng)  # condition 1e3
    assert np.linalg.matrix_rank(a) == 20
    assert linear_cka(x, x @ a) < 0.99


@pytest.mark.parametrize("d, e", [(40, 25), (300, 150)], ids=["feature-form", "gram-form"])
def test_cka_equals_the_direct_formulas(d, e):
    x, y = correlated(np.random.default_rng(3), 200, d, e)
    ours = linear_cka(x, y)
    assert ours == pytest.approx(direct_cka_features(x, y), abs=1e-4)
    assert ours == pytest.approx(direct_cka_hsic(x, y), abs=1e-4)
    # More than 2-D is flattened per example; torch in gives the same (float64 inside).
    assert linear_cka(torch.tensor(x).reshape(200, -1, 5), y) == pytest.approx(ours, abs=1e-10)


def test_cka_degenerate_inputs_are_nan():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 5))
    assert np.isnan(linear_cka(x[:1], x[:1]))
    assert np.isnan(linear_cka(x, np.full((10, 3), 0.1)))
    assert np.isnan(linear_cka(np.ones((10, 4)), x))
    with pytest.raises(ValueError):
        linear_cka(x, x[:9])


# Unbiased HSIC and minibatch CKA ------------------------------------------------------------------------------------


def song_formula_loops(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012, eq. (5), every sum a loop."""
    n = len(k)
    kt = [[0.0 if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l[i][j] for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    one_kl_one = sum(kt[i][j] * lt[j][m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * one_kl_one) / (n * (n - 3))


def u_statistic(k: np.ndarray, l: np.ndarray) -> float:
    """The same estimator as the U-statistic it is (Song et al. 2012, Theorem 2): the mean over ordered 4-tuples of
    distinct examples of k_ij l_ij + k_ij l_qr − 2 k_ij l_iq."""
    n = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def test_unbiased_hsic_against_brute_force():
    rng = np.random.default_rng(5)
    x, y = correlated(rng, 8, 6, 4)
    k, l = x @ x.T, y @ y.T
    ours = unbiased_hsic(torch.tensor(k), torch.tensor(l))
    assert ours == pytest.approx(song_formula_loops(k, l), rel=1e-9)
    assert ours == pytest.approx(u_statistic(k, l), rel=1e-9)
    # Not symmetric, with a nonzero diagonal: still the formula (the diagonal is ignored).
    a, b = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
    assert unbiased_hsic(torch.tensor(a), torch.tensor(b)) == pytest.approx(song_formula_loops(a, b), rel=1e-9)
    # Unbiased: a shift of the features (K_ij → K_ij + a_i + a_j + c) changes nothing. MinibatchCKA relies on it
    # when it centres each batch.
    shifted = x + rng.standard_normal(6) * 10
    assert unbiased_hsic(torch.tensor(shifted @ shifted.T), torch.tensor(l)) == pytest.approx(ours, rel=1e-8)
    with pytest.raises(ValueError):
        unbiased_hsic(torch.tensor(k[:3, :3]), torch.tensor(l[:3, :3]))


def test_minibatch_cka_of_one_batch_is_the_unbiased_estimate_on_uncentred_features():
    x, y = correlated(np.random.default_rng(6), 16, 10, 7)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    cka = MinibatchCKA(2, 1)
    cka.update([xt, xt.reshape(16, 2, 5)], [yt])
    k, l = torch.tensor(x) @ torch.tensor(x).T, torch.tensor(y) @ torch.tensor(y).T
    expected = unbiased_hsic(k, l) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l, l))
    np.testing.assert_allclose(cka.result(), [[expected], [expected]], atol=1e-5)
    assert cka.batches == 1


def test_minibatch_cka_of_float32_features_with_a_large_mean_is_accurate():
    """Deep ReLU features have a mean many times their spread; the unbiased HSIC of uncentred float32 Gram matrices
    then cancels catastrophically (torch-cka 0.21 is off by ~0.1 that way, see bench/compare.py). Ours on float32
    features against ours on the same values in float64, and the naive float32 computation as a witness."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((400, 256)) + 10.0
    y = x @ rng.standard_normal((256, 64)) / 16 + rng.standard_normal((400, 64)) + 10.0
    xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    single, double = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    naive = []
    n, eye = 100, torch.eye(100, dtype=torch.bool)

    def naive_hsic(k, l):  # Song et al.'s formula in float32 on uncentred Gram matrices
        k, l, one = k.masked_fill(eye, 0), l.masked_fill(eye, 0), torch.ones(n, 1)
        return ((torch.trace(k @ l) + one.T @ k @ one @ one.T @ l @ one / ((n - 1) * (n - 2))
                 - 2 / (n - 2) * one.T @ k @ l @ one) / (n * (n - 3))).item()

    for s in range(0, 400, n):
        bx, by = xs[s:s + n], ys[s:s + n]
        single.update([bx], [by])
        double.update([bx.double()], [by.double()])
        k, l = bx @ bx.T, by @ by.T
        naive.append((naive_hsic(k, l), naive_hsic(k, k), naive_hsic(l, l)))
    exact = double.result()[0, 0]
    assert 0.1 < exact < 0.5
    assert single.result()[0, 0] == pytest.approx(exact, abs=1e-6)
    h = np.mean(naive, 0)
    assert abs(h[0] / np.sqrt(h[1] * h[2]) - exact) > 0.01


def test_minibatch_cka_approaches_full_batch_cka():
    rng = np.random.default_rng(0)
    x, y = correlated(rng, 2000, 16, 8)
    full = linear_cka(x, y)
    cka = MinibatchCKA(1, 1)
    biased = []
    for s in range(0, 2000, 100):
        bx, by = x[s:s + 100], y[s:s + 100]
        cka.update([torch.tensor(bx, dtype=torch.float32)], [torch.tensor(by, dtype=torch.float32)])
        bx, by = bx - bx.mean(0), by - by.mean(0)
        k, l = bx @ bx.T, by @ by.T
        biased.append((np.vdot(k, l), np.vdot(k, k), np.vdot(l, l)))
    assert cka.batches == 20
    assert 0.3 < full < 0.7
    assert abs(cka.result()[0, 0] - full) < 0.01
    # The test can tell: the biased HSIC averaged over the same batches is off by several times the tolerance.
    h = np.mean(biased, 0)
    assert abs(h[0] / np.sqrt(h[1] * h[2]) - full) > 0.02


def test_minibatch_cka_skips_small_batches_and_checks_its_inputs():
    cka = MinibatchCKA(1, 2)
    assert np.isnan(cka.result()).all() and cka.result().shape == (1, 2)
    x = torch.randn(3, 5)
    cka.update([x], [x, x])  # fewer than 4 examples: skipped
    assert cka.batches == 0
    x = torch.randn(6, 5)
    cka.update([x], [x, torch.ones(6, 2)])  # a constant layer: nan, not an error
    assert cka.batches == 1
    r = cka.result()
    assert r[0, 0] == pytest.approx(1.0, abs=1e-6) and np.isnan(r[0, 1])
    with pytest.raises(ValueError):
        cka.update([x, x], [x, x])
    with pytest.raises(ValueError):
        cka.update([x], [x, x[:5]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_minibatch_cka_on_cuda_matches_the_cpu():
    rng = np.random.default_rng(7)
    x, y = correlated(rng, 64, 20, 10)
    xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    cpu, gpu = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    for s in range(0, 64, 16):
        cpu.update([xs[s:s + 16]], [ys[s:s + 16]])
        gpu.update([xs[s:s + 16].cuda()], [ys[s:s + 16].cuda()])
    np.testing.assert_allclose(gpu.result(), cpu.result(), atol=1e-6)


# A network and its channel-permuted twin --------------------------------------------------------------------------


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def run_recording(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    outs = {}
    handles = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o))
               for name in ("conv1", "conv2")]
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in handles:
            h.remove()
    return logits, outs


def test_a_network_with_permuted_channels():
    torch.manual_seed(0)
    net = TinyCNN()
    perm = torch.tensor([3, 0, 7, 5, 1, 2, 4, 6])  # no fixed point
    twin = permuted_twin(net, perm)
    # Inputs that differ in colour and contrast, so that channels differ in more than noise.
    x = torch.randn(64, 3, 12, 12) * torch.rand(64, 1, 1, 1) * 2 + torch.randn(64, 3, 1, 1)
    logits, a = run_recording(net, x)
    twin_logits, b = run_recording(twin, x)
    torch.testing.assert_close(twin_logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["conv1"], a["conv1"][:, perm])

    assert linear_cka(a["conv1"], b["conv1"]) == pytest.approx(1.0, abs=1e-6)
    cka = MinibatchCKA(2, 2)
    for s in range(0, 64, 16):
        cka.update([a["conv1"][s:s + 16], a["conv2"][s:s + 16]], [b["conv1"][s:s + 16], b["conv2"][s:s + 16]])
    np.testing.assert_allclose(np.diag(cka.result()), [1.0, 1.0], atol=1e-6)

    means_a, means_b = a["conv1"].mean((2, 3)), b["conv1"].mean((2, 3))
    same_index = channel_correlation(means_a, means_b)
    assert not np.allclose(same_index, 1.0, atol=1e-3)
    assert same_index.min() < 0.9
    p = matching(means_a, means_b)  # channel i of net is channel p[i] of the twin: p = perm⁻¹
    np.testing.assert_array_equal(p, torch.argsort(perm).numpy())
    np.testing.assert_allclose(channel_correlation(means_a, means_b[:, p]), 1.0, atol=1e-6)


# Correlations -------------------------------------------------------------------------------------------------------


def test_channel_correlation_against_numpy():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((40, 6))
    b = 0.5 * a + rng.standard_normal((40, 6))
    b[:, 2] *= -1
    a[:, 5] = 3.0  # constant
    ours = channel_correlation(a, torch.tensor(b))
    expected = [np.corrcoef(a[:, c], b[:, c])[0, 1] for c in range(5)]
    np.testing.assert_allclose(ours[:5], expected, atol=1e-12)
    assert ours[2] < 0
    assert np.isnan(ours[5])


def test_matching_recovers_a_noisy_permutation():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((100, 12))
    perm = rng.permutation(12)
    b = np.empty_like(a)
    b[:, perm] = a + 0.3 * rng.standard_normal(a.shape)  # a's channel i is b's channel perm[i]
    np.testing.assert_array_equal(matching(a, b), perm)


def test_spearman_against_scipy():
    rng = np.random.default_rng(10)
    a = rng.integers(0, 5, size=(6, 7)).astype(float)  # many ties
    b = a + rng.integers(0, 3, size=(6, 7))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    c = rng.standard_normal(50)
    d = np.exp(c) + 0.1 * rng.standard_normal(50)
    assert spearman(torch.tensor(c), d) == pytest.approx(scipy.stats.spearmanr(c, d)[0], abs=1e-12)
    assert spearman(c, np.exp(c)) == pytest.approx(1.0)
    assert np.isnan(spearman(c, np.ones(50)))
