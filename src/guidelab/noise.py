r"""Row-keyed, counter-based noise: every random number is a pure function of where it is used.

A study draws the noise of row r (of class c, under seed s) as

    Z[r, k, j] = Phi^{-1}-free Box–Muller of  h = mix64(key(s, c, r) + (k 2^32 + j) G),

where k counts the draws made for that row so far (the initial state is draw 0, then one draw
per noisy sampler step), j indexes the coordinates of one draw (the flattened trailing shape),
G = 0x9E3779B97F4A7C15 (the golden-ratio increment) and mix64 is the SplitMix64 finaliser
(Steele, Lea & Flood 2014), a bijection of 64-bit integers with full avalanche. The per-row key
is itself mix64 of the seed, the stream (the class) and the row index. So Z[r, k, j] depends on
(seed, class, row index, draw, coordinate) only: not on how many rows share the batch, which
other classes are in it, the chunk size, the device's execution order or the backend. Any
subset of rows of any unit can be recomputed bit for bit (on the same kind of device and dtype),
and runs at different guidance strengths that use the same (seed, class, rows) are *coupled*:
row r of both is driven by the same noise.

From the 64 bits h of the pair of coordinates (2i, 2i + 1): u1 = (h_hi + 1/2) / 2^32 and
u2 = (h_lo + 1/2) / 2^32 from the high and low 32-bit halves, and the Box–Muller pair
Z_2i = sqrt(-2 log u1) cos(2 pi u2), Z_2i+1 = sqrt(-2 log u1) sin(2 pi u2), two independent
standard normals (the smallest u1 = 2^-33 caps |Z| at 6.77, a truncation of probability 1.3e-11
per draw). A uniform draw takes the top 53 bits of its own h, (h >> 11 + 1/2) 2^-53, in (0, 1).

The arithmetic is int64 tensor arithmetic (multiplication wraps modulo 2^64 on every PyTorch
backend; the right shifts are made logical by masking), so it runs vectorised on the CPU and on
CUDA. Tests check mix64 against a NumPy uint64 reference and the draws' moments and
independence.

:func:`normal`, :func:`uniform` and :func:`categorical` dispatch on the ``generator`` argument
that every sampler and family takes: a :class:`RowNoise`, a ``torch.Generator`` or None.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RowNoise", "mix64", "normal", "uniform", "categorical", "NOISE_SCHEME_VERSION"]

NOISE_SCHEME_VERSION = 1
"""Version of the scheme above (row keys, mix64, Box–Muller, uniform bits): part of every
stored unit's identity (:mod:`guidelab.studies.store`). Bump it whenever any draw changes."""

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A Python integer modulo 2^64 as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_LOW32 = (1 << 32) - 1


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (PyTorch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 bit patterns, elementwise; any shape (a new tensor)."""
    z = z ^ _shift_right(z, 30)
    z.mul_(_MIX1)
    z.bitwise_xor_(_shift_right(z, 27))
    z.mul_(_MIX2)
    return z.bitwise_xor_(_shift_right(z, 31))


def _mix_int(value: int) -> int:
    """mix64 of one Python integer (same bits as :func:`mix64`)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(z ^ (z >> 31))


def _as_index(value, n: int | None, name: str, device) -> torch.Tensor:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer or an integer tensor, got {value!r}")
    if isinstance(value, int):
        return torch.full((n,), value, dtype=torch.int64, device=device) if n is not None \
            else torch.tensor([value], dtype=torch.int64, device=device)
    tensor = torch.as_tensor(value, device=device)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name}: expected integers, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name}: expected shape [N], got {tuple(tensor.shape)}")
    if (tensor < 0).any():
        raise ValueError(f"{name}: expected non-negative integers")
    return tensor.to(torch.int64)


class RowNoise:
    """Noise of N rows, each a pure function of (seed, stream, row index, draw, coordinate).

    Args:
        seed: a non-negative integer.
        streams: the stream of each row, an int (all rows) or an ``[N]`` integer tensor;
            studies use the class, so classes never share noise.
        rows: the row indices, an int n (rows 0..n-1) or an ``[N]`` integer tensor (e.g.
            ``arange(start, stop)`` for one chunk of a unit).
        device: where the draws are made (default: the device of ``rows`` if a tensor, else the
            CPU).

    Pass it as ``generator=`` to any sampler or family ``sample``: each call of
    :meth:`normal` or :meth:`uniform` is one draw (the draw counter advances by one).

    Example:
        >>> a = RowNoise(seed=0, streams=1, rows=torch.arange(10))
        >>> b = RowNoise(seed=0, streams=1, rows=torch.arange(4, 6))
        >>> torch.equal(a.normal((10, 3))[4:6], b.normal((2, 3)))
        True
    """

    def __init__(self, seed: int, streams: int | torch.Tensor = 0,
                 rows: int | torch.Tensor | None = None, *, device=None):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        if rows is None:
            raise ValueError("rows: expected the number of rows or an [N] tensor of row indices")
        if device is None:
            device = rows.device if isinstance(rows, torch.Tensor) else torch.device("cpu")
        device = torch.device(device)
        if isinstance(rows, int) and not isinstance(rows, bool):
            if rows < 0:
                raise ValueError(f"rows: expected a non-negative count, got {rows}")
            rows = torch.arange(rows, dtype=torch.int64, device=device)
        rows = _as_index(rows, None, "rows", device)
        streams = _as_index(streams, rows.shape[0], "streams", device)
        if streams.shape != rows.shape:
            raise ValueError(f"streams: expected an int or shape {tuple(rows.shape)} (one per "
                             f"row), got {tuple(streams.shape)}")
        self.seed = seed
        self.device = device
        seed_key = _mix_int(_mix_int(seed) + 0x632BE59BD9B4E019)
        stream_key = mix64(streams * _GOLDEN + seed_key)  # [N]
        self._keys = mix64(stream_key + (rows + 1) * _GOLDEN)  # [N]
        self.draws = 0

    @property
    def n(self) -> int:
        """The number of rows N."""
        return self._keys.shape[0]

    def take(self, index) -> RowNoise:
        """The noise of a subset of the rows (``index`` into 0..N-1), at the same draw count."""
        out = RowNoise.__new__(RowNoise)
        out.seed, out.device, out.draws = self.seed, self.device, self.draws
        out._keys = self._keys[torch.as_tensor(index, device=self.device)]
        return out

    def _bits(self, width: int) -> torch.Tensor:
        """One draw's 64-bit patterns, ``[N, width]`` int64; advances the draw counter."""
        if width >= 1 << 32:
            raise ValueError(f"shape: a draw of {width} coordinates per row is too large")
        offsets = (torch.arange(width, dtype=torch.int64, device=self.device)
                   + (self.draws << 32)) * _GOLDEN  # [width]
        self.draws += 1
        return mix64(self._keys[:, None] + offsets)  # [N, width]

    def _check_shape(self, shape) -> tuple[int, ...]:
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != self.n:
            raise ValueError(f"shape: expected a shape [{self.n}, ...] (one row per noise row), "
                             f"got {list(shape)}")
        return shape

    def normal(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal draws of ``shape = [N, ...]`` in ``dtype`` (Box–Muller pairs)."""
        shape = self._check_shape(shape)
        width = math.prod(shape[1:])
        bits = self._bits((width + 1) // 2)  # one 64-bit pattern per pair, [N, P]
        work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        scale = 2.0**-32
        u1 = _shift_right(bits, 32).to(work).add_(0.5).mul_(scale)  # (0, 1), [N, P]
        angle = bits.bitwise_and_(_LOW32).to(work).add_(0.5).mul_(2.0 * math.pi * scale)
        radius = u1.log_().mul_(-2.0).sqrt_()  # [N, P]
        # the pair (r cos, r sin) interleaved: products written straight into their strided
        # places (a stack of cos and sin first cost as much as the rest of the draw at d = 2)
        pairs = torch.empty((shape[0], 2 * radius.shape[1]), dtype=work, device=self.device)
        torch.mul(torch.cos(angle), radius, out=pairs[:, 0::2])
        torch.mul(torch.sin(angle), radius, out=pairs[:, 1::2])  # [N, 2 P]
        return pairs[:, :width].to(dtype).reshape(shape)

    def uniform(self, shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform draws in (0, 1) of ``shape = [N, ...]`` (53 random bits each)."""
        shape = self._check_shape(shape)
        bits = self._bits(math.prod(shape[1:]))  # [N, D]
        out = (_shift_right(bits, 11).to(torch.float64) + 0.5) * 2.0**-53  # [N, D]
        return out.to(dtype).reshape(shape)

    def __repr__(self) -> str:
        return f"RowNoise(seed={self.seed}, n={self.n}, draws={self.draws}, device={self.device})"


def normal(shape, generator: RowNoise | torch.Generator | None, device=None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws of ``shape`` from a :class:`RowNoise` or a torch generator."""
    if isinstance(generator, RowNoise):
        return generator.normal(shape, dtype).to(device or generator.device)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def uniform(shape, generator: RowNoise | torch.Generator | None, device=None,
            dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform draws in [0, 1) (a RowNoise: (0, 1)) of ``shape``."""
    if isinstance(generator, RowNoise):
        return generator.uniform(shape, dtype).to(device or generator.device)
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)


def categorical(weights: torch.Tensor, n: int, generator: RowNoise | torch.Generator | None,
                device=None) -> torch.Tensor:
    """``n`` draws of an index with probabilities proportional to ``weights``.

    Args:
        weights: ``[K]`` (one distribution for all rows) or ``[n, K]`` non-negative weights.
        generator: a :class:`RowNoise` draws by the Gumbel-max trick from one ``[n, K]``
            uniform draw (argmax of log w + Gumbel, an exact draw); a torch generator or None
            uses ``torch.multinomial``.

    Returns:
        ``[n]`` int64 indices.
    """
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    if isinstance(generator, RowNoise):
        gumbel = -torch.log(-torch.log(generator.uniform((n, weights.shape[-1]))))  # [n, K]
        log_w = torch.log(weights.to(device=gumbel.device, dtype=torch.float64))  # [(n,) K]
        return torch.argmax(log_w + gumbel, dim=1).to(device or generator.device)
    if weights.ndim == 1:
        return torch.multinomial(weights, n, replacement=True, generator=generator)
    return torch.multinomial(weights, 1, replacement=True, generator=generator)[:, 0]
