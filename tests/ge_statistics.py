"""Analytical statistics of a Gilbert-Elliott channel, shared by the tests that check loss rates against them."""

from __future__ import annotations

from testbed.emulator.loss import GilbertElliottParams


def stationary(params: GilbertElliottParams) -> tuple[float, float]:
    pi_b = params.p / (params.p + params.r)
    return 1.0 - pi_b, pi_b


def loss_asymptotic_variance(params: GilbertElliottParams) -> float:
    """sigma^2 with Var(sample mean of N loss indicators) ~= sigma^2 / N.

    Derivation.  Let S_n in {0 (good), 1 (bad)} be the state packet n arrives in and X_n its loss
    indicator.  Given the states, the X_n are independent with P(X_n = 1 | S_n) = l(S_n), where
    l(s) = lg + (lb - lg) * s.  With pi_b = p / (p + r), pi_g = 1 - pi_b and lam = 1 - p - r:
      * m = E[X] = pi_g*lg + pi_b*lb,  Var(X) = m (1 - m)            (X is Bernoulli(m));
      * the two-state chain has Cov(S_0, S_k) = pi_g*pi_b*lam^k        (second eigenvalue lam);
      * for k >= 1, by conditional independence
          Cov(X_0, X_k) = Cov(l(S_0), l(S_k)) = (lb - lg)^2 * pi_g*pi_b*lam^k;
      * sigma^2 = Var(X) + 2 sum_{k>=1} Cov(X_0, X_k)
                = m (1 - m) + 2 (lb - lg)^2 pi_g pi_b * lam / (1 - lam),   1 - lam = p + r.
    The chain starts in good rather than in stationarity; that shifts the expected number of bad
    packets by about pi_b / (p + r) (< 1 packet for every parameter set here), i.e. a bias of
    < 1e-6 in the rate, far below the standard errors (>= 2e-4) used here.
    """
    pi_g, pi_b = stationary(params)
    lb, lg = params.loss_bad, params.loss_good
    m = pi_g * lg + pi_b * lb
    lam = 1.0 - params.p - params.r
    return m * (1.0 - m) + 2.0 * (lb - lg) ** 2 * pi_g * pi_b * lam / (params.p + params.r)


def state_asymptotic_variance(params: GilbertElliottParams) -> float:
    """Same derivation for the bad-state indicator S_n itself (lb = 1, lg = 0, no draw noise):
    sigma^2 = pi_g pi_b (1 + 2 lam / (1 - lam)) = pi_g pi_b (2 - p - r) / (p + r)."""
    pi_g, pi_b = stationary(params)
    return pi_g * pi_b * (2.0 - params.p - params.r) / (params.p + params.r)
