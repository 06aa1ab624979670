"""A slow GF(2^8) multiply written independently of the kernel's tables, for the FEC tests' oracles."""


def slow_mul(a: int, b: int) -> int:
    """Shift-and-add multiplication modulo x^8+x^4+x^3+x^2+1 (0x11D)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return product
