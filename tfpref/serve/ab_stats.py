"""Click-through rates of two arms, their confidence intervals, and the test of their difference.

Each impression is a Bernoulli trial (clicked or not). An arm's rate gets the Wilson score interval,
which stays inside [0, 1] and behaves with few impressions or few clicks, where the normal
approximation does not. The arms are compared with the two-sided two-proportion z-test (pooled
variance): the p-value of "both arms have the same click-through rate".

Example:
    >>> ab_report({"A": (1000, 52), "B": (1000, 81)})["p_value"]
"""
import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(clicks, impressions, z=Z_95):
    """(low, high) of the Wilson score interval of clicks / impressions; (0, 1) with no impressions."""
    if impressions == 0:
        return 0.0, 1.0
    rate = clicks / impressions
    denominator = 1 + z * z / impressions
    centre = (rate + z * z / (2 * impressions)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / impressions + z * z / (4 * impressions * impressions)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(clicks_a, impressions_a, clicks_b, impressions_b):
    """Two-sided p-value of the pooled two-proportion z-test; None until both arms have impressions,
    1.0 when the pooled rate is 0 or 1 (no variation to test)."""
    if impressions_a == 0 or impressions_b == 0:
        return None
    pooled = (clicks_a + clicks_b) / (impressions_a + impressions_b)
    variance = pooled * (1 - pooled) * (1 / impressions_a + 1 / impressions_b)
    if variance == 0:
        return 1.0
    z = (clicks_a / impressions_a - clicks_b / impressions_b) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def ab_report(counts):
    """The report of {arm: (impressions, clicks)} for two arms: each arm's impressions, clicks,
    click-through rate and 95% interval, and the p-value of their difference."""
    arms = {}
    for arm, (impressions, clicks) in counts.items():
        low, high = wilson_interval(clicks, impressions)
        arms[arm] = {"impressions": impressions, "clicks": clicks,
                     "ctr": clicks / impressions if impressions else None, "ctr_95": [low, high]}
    (a, (impressions_a, clicks_a)), (b, (impressions_b, clicks_b)) = counts.items()
    return {"arms": arms, "p_value": two_proportion_p_value(clicks_a, impressions_a, clicks_b, impressions_b),
            "test": f"two-sided two-proportion z-test, {a} vs {b}"}


__all__ = ["wilson_interval", "two_proportion_p_value", "ab_report"]
