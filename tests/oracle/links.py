"""The engine's random links, bit for bit: what `Network::route`
(`sim/src/net.rs`) draws for each packet, from the generators of
`sim/src/rng.rs`, so that a runner loses and delays the packets the
engine loses and delays (docs/oracle.md, "Random links").

Ported from the crates Cargo.lock pins (read in ~/.cargo/registry/src):

- rand_chacha 0.3.1 `ChaCha8Rng` (`chacha.rs`, `guts.rs`): ChaCha with 4
  double rounds; state = constants, the 32-byte key, a 64-bit block
  counter (words 12-13) and the 64-bit stream id (words 14-15); each
  refill computes 4 blocks (64 words) at counters pos..pos+3;
- rand_core 0.6.4 `SeedableRng::seed_from_u64` (the key from PCG32) and
  `BlockRng::next_u32`/`next_u64` (`block.rs`: a u64 is two words, low
  first; at the buffer's last word, that word and the next buffer's first);
- rand 0.8.8 `gen_range` on integers (`distributions/uniform.rs`,
  `UniformInt::sample_single_inclusive`): a widening multiply by the
  range, rejected while the low half exceeds `(range << lz(range)) - 1`;
  `Standard` for u32/u64 is one `next_u32`/`next_u64`.

Checked against vectors printed by those crates and by heartsim-sim's own
`Network::route` (test_links.py, links_vectors.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1


def stream_id(name: str) -> int:
    """FNV-1a, 64-bit, of the name's bytes (`rng::stream_id`)."""
    h = 0xCBF2_9CE4_8422_2325
    for b in name.encode():
        h = ((h ^ b) * 0x0000_0100_0000_01B3) & M64
    return h


def _key_from_u64(state: int) -> list[int]:
    """`seed_from_u64`: eight PCG32 outputs, each a little-endian word of
    the 32-byte seed (so the key's words are the outputs themselves)."""
    words = []
    for _ in range(8):
        state = (state * 6364136223846793005 + 11634580027462260723) & M64
        xorshifted = (((state >> 18) ^ state) >> 27) & M32
        rot = state >> 59
        words.append(((xorshifted >> rot) | (xorshifted << (32 - rot))) & M32)
    return words


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & M32


def _block(key: list[int], counter: int, stream: int) -> list[int]:
    """One ChaCha8 block: 16 words."""
    s = [0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574, *key]
    s += [counter & M32, counter >> 32, stream & M32, stream >> 32]
    x = list(s)

    def qr(a, b, c, d):
        x[a] = (x[a] + x[b]) & M32
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & M32
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & M32
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & M32
        x[b] = _rotl(x[b] ^ x[c], 7)

    for _ in range(4):
        qr(0, 4, 8, 12)
        qr(1, 5, 9, 13)
        qr(2, 6, 10, 14)
        qr(3, 7, 11, 15)
        qr(0, 5, 10, 15)
        qr(1, 6, 11, 12)
        qr(2, 7, 8, 13)
        qr(3, 4, 9, 14)
    return [(a + b) & M32 for a, b in zip(x, s)]


class ChaCha8:
    """`ChaCha8Rng::seed_from_u64(seed)` after `set_stream(stream)` (a
    fresh generator: `set_stream` on an unused buffer only sets the id)."""

    def __init__(self, seed: int, stream: int):
        self.key = _key_from_u64(seed & M64)
        self.stream = stream & M64
        self.counter = 0
        self.results: list[int] = []
        self.index = 64  # `BlockRng::new`: empty, refilled on first use

    def _generate_and_set(self, index: int):
        self.results = []
        for i in range(4):
            self.results += _block(self.key, (self.counter + i) & M64, self.stream)
        self.counter = (self.counter + 4) & M64
        self.index = index

    def next_u32(self) -> int:
        if self.index >= 64:
            self._generate_and_set(0)
        v = self.results[self.index]
        self.index += 1
        return v

    def next_u64(self) -> int:
        i = self.index
        if i < 63:
            self.index += 2
            return self.results[i + 1] << 32 | self.results[i]
        if i >= 64:
            self._generate_and_set(2)
            return self.results[1] << 32 | self.results[0]
        x = self.results[63]
        self._generate_and_set(1)
        return self.results[0] << 32 | x

    def below_u32(self, n: int) -> int:
        """`gen_range(0..n)` on u32 (n >= 1)."""
        return _uniform(self.next_u32, 32, 0, n - 1)

    def inclusive_u64(self, lo: int, hi: int) -> int:
        """`gen_range(lo..=hi)` on u64."""
        return _uniform(self.next_u64, 64, lo, hi)


def _uniform(draw, bits: int, lo: int, hi: int) -> int:
    """`UniformInt::sample_single_inclusive` for a 32- or 64-bit type."""
    mask = (1 << bits) - 1
    rng = (hi - lo + 1) & mask
    if rng == 0:
        return draw()
    zone = ((rng << (bits - rng.bit_length())) & mask) - 1
    while True:
        m = draw() * rng
        if m & mask <= zone:
            return (lo + (m >> bits)) & mask


def stream(seed: int, name: str) -> ChaCha8:
    """`rng::stream`: the generator for one named purpose."""
    return ChaCha8(seed, stream_id(name))


@dataclass(frozen=True)
class Ratio:
    """`rng::Ratio`: `num/den`."""

    num: int = 0
    den: int = 1

    def sample(self, rng: ChaCha8) -> bool:
        """No draw when `num` is zero."""
        return self.num != 0 and rng.below_u32(self.den) < self.num


@dataclass(frozen=True)
class LinkConfig:
    """`net::LinkConfig`; latency `lo..=hi` in µs (fixed: lo == hi)."""

    lo: int = 0
    hi: int = 0
    drop: Ratio = Ratio()
    duplicate: Ratio = Ratio()
    reorder: Ratio = Ratio()
    reorder_delay: int = 1_000_000  # DEFAULT_REORDER_DELAY

    def is_random(self) -> bool:
        return self.lo != self.hi or any(r.num for r in (self.drop, self.duplicate, self.reorder))

    def latency(self, rng: ChaCha8) -> int:
        """`Latency::sample`."""
        return rng.inclusive_u64(self.lo, self.hi) if self.lo != self.hi else self.lo

    def delay(self, rng: ChaCha8) -> int:
        """`LinkConfig::delay`: latency, then reorder's hold-back."""
        d = self.latency(rng)
        if self.reorder.sample(rng):
            d += rng.inclusive_u64(1, max(self.reorder_delay, 1))
        return d


LOST = "lost"


@dataclass
class Links:
    """`Network`'s links: the default, per-direction overrides (`[[link]]`,
    `link` faults), and each direction's generator, made on its first
    random packet, named `net/{from}/{to}` (node names). Partitions and
    broken links stay with the runner's network (tcp.Net), which checks
    them before `route` as `Network::route` does."""

    seed: int
    default: LinkConfig = field(default_factory=LinkConfig)
    overrides: dict = field(default_factory=dict)
    rngs: dict = field(default_factory=dict)

    def set_link(self, frm: str, to: str, config: LinkConfig):
        self.overrides[(frm, to)] = config

    def link(self, frm: str, to: str) -> LinkConfig:
        return self.overrides.get((frm, to), self.default)

    def route(self, frm: str, to: str):
        """`LOST`, or (delay, duplicate's delay or None), in µs. Draws, in
        order: loss, delay (latency, reorder), duplicate, its delay."""
        c = self.link(frm, to)
        if not c.is_random():
            return c.lo, None
        rng = self.rngs.get((frm, to))
        if rng is None:
            rng = self.rngs[(frm, to)] = stream(self.seed, f"net/{frm}/{to}")
        if c.drop.sample(rng):
            return LOST
        delay = c.delay(rng)
        duplicate = c.delay(rng) if c.duplicate.sample(rng) else None
        return delay, duplicate
