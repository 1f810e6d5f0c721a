import torch
from scipy import stats

from convergence.noise import PerSampleNoise, mix64, normal

MASK = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    """splitmix64 output function in Python integers (Steele, Lea & Flood 2014)."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_mix64_matches_unsigned_reference():
    xs = [0, 1, 2, 12345, (1 << 63) - 1, 1 << 63, MASK, 0xDEADBEEFCAFEBABE]
    signed = torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in xs], dtype=torch.int64)
    got = [int(v) & MASK for v in mix64(signed)]
    assert got == [splitmix64_reference(x) for x in xs]


def test_normals_are_standard_normal():
    z = normal(3, torch.arange(50_000), 7, 4)
    assert z.shape == (50_000, 4) and z.dtype == torch.float64
    flat = z.flatten()
    assert abs(float(flat.mean())) < 5 / 447
    assert abs(float(flat.var()) - 1) < 5 * (2 / 200_000) ** 0.5
    assert stats.kstest(flat.numpy(), "norm").pvalue > 1e-3
    corr = torch.corrcoef(z.T) - torch.eye(4, dtype=torch.float64)
    assert corr.abs().max() < 5 / 50_000**0.5


def test_streams_depend_on_seed_sample_and_step_only():
    like = torch.zeros(10, 3)
    a = PerSampleNoise(seed=1).draw(4, like)
    assert torch.equal(a[6:], PerSampleNoise(seed=1, offset=6).draw(4, like[:4]))
    assert not torch.equal(a, PerSampleNoise(seed=2).draw(4, like))
    assert not torch.equal(a, PerSampleNoise(seed=1).draw(5, like))
    assert a.dtype == torch.float32
    # coordinates beyond d are a prefix-consistent extension: d = 3 is the first 3 of d = 5
    assert torch.equal(normal(1, torch.arange(10), 4, 5)[:, :3].float(), a)


def test_consecutive_steps_are_uncorrelated():
    z0 = normal(0, torch.arange(40_000), 0, 1)
    z1 = normal(0, torch.arange(40_000), 1, 1)
    assert abs(float(torch.corrcoef(torch.cat([z0, z1], 1).T)[0, 1])) < 5 / 200


def test_brownian_paths_are_shared_across_doublings():
    """The increment of a coarse step is the sum of the fine increments it covers."""
    from convergence.noise import BrownianNoise

    def increments(T):
        schedule = [(1 - k / T, 1 - (k + 1) / T) for k in range(T)]
        run = BrownianNoise(seed=3).for_schedule(schedule)
        like = torch.zeros(4000, 2, dtype=torch.float64)
        return torch.stack([run.draw(k, like) for k in range(T)])  # z_k = dB sqrt(T)

    coarse, fine, finer = increments(5), increments(10), increments(20)
    assert torch.allclose(coarse, (fine[0::2] + fine[1::2]) / 2**0.5, atol=1e-13)
    assert torch.allclose(fine, (finer[0::2] + finer[1::2]) / 2**0.5, atol=1e-13)
    assert abs(float(finer.std()) - 1) < 0.02 and abs(float(finer.mean())) < 0.02
    assert not torch.allclose(increments(6)[:5], coarse)  # another odd base, another path
