import numpy as np
import pytest

from dit_model import noise
from dit_model.noise import normal, pcg4d

# Frozen outputs: the WGSL kernel and the browser must reproduce exactly these float32 bits.
KNOWN = {(0, 0, 0, 0): [1.0531741380691528, -1.6277527809143066, 1.6904579401016235, 0.09498624503612518,
                        -0.8063216805458069, 0.1521807163953781],
         (1234, 1, 7, 1000): [-0.6651331186294556, -0.22837887704372406, -1.3754472732543945, 1.3155139684677124]}


@pytest.mark.parametrize("key", list(KNOWN))
def test_known_values(key):
    seed, stream, step, start = key
    got = normal(seed, stream, step, len(KNOWN[key]), start)
    np.testing.assert_array_equal(got, np.array(KNOWN[key], np.float32))


def test_pcg4d_known_words():
    x, y, z, w = pcg4d(*(np.array([v], np.uint32) for v in (0, 0, 0, 0)))
    again = pcg4d(*(np.array([v], np.uint32) for v in (0, 0, 0, 0)))
    assert (x, y, z, w) == again and len({int(x[0]), int(y[0]), int(z[0]), int(w[0])}) == 4


def test_counter_based_windows_agree():
    whole = normal(7, noise.STREAM_STEP, 3, 100)
    np.testing.assert_array_equal(normal(7, noise.STREAM_STEP, 3, 30, start=50), whole[50:80])


def test_statistics_of_a_million():
    z = normal(3, 0, 0, 1_000_000).astype(np.float64)
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005          # 5 sigma of the estimators
    assert abs(((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3) < 0.05  # Gaussian kurtosis
    assert abs((np.abs(z) > 2).mean() - 0.0455) < 0.002


def test_streams_steps_and_seeds_are_independent():
    a = normal(1, 0, 0, 100_000).astype(np.float64)
    for other in (normal(2, 0, 0, 100_000), normal(1, 1, 0, 100_000), normal(1, 0, 1, 100_000)):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.02


def test_polynomial_pieces_are_accurate():
    k = np.arange(1, 2 ** 24 + 1, 4099, dtype=np.uint32)
    assert np.abs(noise._ln_u24(k) - np.log(k * 2.0 ** -24)).max() < 1e-6
    a = np.linspace(0, 40, 5001).astype(np.float32)
    assert np.abs(noise._sqrt(a) - np.sqrt(a.astype(np.float64))).max() < 4e-6
    j = np.arange(0, 2 ** 24, 997, dtype=np.uint32)
    assert np.abs(noise._cos_2pi_u24(j) - np.cos(2 * np.pi * j * 2.0 ** -24)).max() < 1e-6
