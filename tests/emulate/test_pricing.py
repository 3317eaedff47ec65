"""The pricing layer the emulator paces by and the cost model predicts by."""

from __future__ import annotations

import pytest

from mixfleet.emulate.pricing import (
    EmulateConfig,
    Link,
    LinkPrices,
    StepCost,
    bytes_moved,
    transfer_s,
)
from mixfleet.emulate.profile import get_profile
from mixfleet.errors import ConfigError


def test_ring_algorithms_move_the_textbook_fractions() -> None:
    """All-reduce moves 2(n-1)/n of the bytes, all-gather and reduce-scatter (n-1)/n."""
    assert bytes_moved("all_reduce", 1000, 4) == (1500.0, 6)
    assert bytes_moved("all_gather", 1000, 4) == (750.0, 3)
    assert bytes_moved("reduce_scatter", 1000, 2) == (500.0, 1)
    assert bytes_moved("send", 1000, 2) == (1000.0, 1)
    assert bytes_moved("all_reduce", 1000, 1) == (0.0, 0)


def test_transfer_time_is_latency_plus_bytes_over_bandwidth() -> None:
    """1 GB all-reduced over 2 ranks on a 10 GB/s link: 2 x 10 us + 1e9 / 1e10 s."""
    link = Link("bridge", 10.0, 10e-6, "assumed")
    assert transfer_s("all_reduce", 1e9, 2, link) == pytest.approx(0.1 + 20e-6)


def test_link_classes_come_from_catalog_config_and_assumptions() -> None:
    """Inside a kind: the catalog's link_gbps; across kinds: the bridge; across nodes: NIC."""
    prices = EmulateConfig(bridge_gbps=16.0).link_prices()
    intra = prices.link("nvidia-h100", "nvidia-h100")
    assert (intra.cls, intra.gbps, intra.origin) == ("intra", 900.0, "catalog")
    bridge = prices.link("nvidia-h20", "kunlun-p800")
    assert (bridge.cls, bridge.gbps, bridge.origin) == ("bridge", 16.0, "config")
    nic = prices.link("nvidia-h20", "nvidia-h20", same_node=False)
    assert (nic.cls, nic.gbps, nic.origin) == ("nic", 25.0, "assumed")
    group = prices.group_link(["nvidia-h100", "nvidia-h100", "ascend-910b"])
    assert group.cls == "bridge"


@pytest.mark.parametrize("kw", [{"bridge_gbps": 0.0}, {"nic_gbps": -1.0},
                                {"time_scale": 0.0}, {"time_scale": 2.0}])
def test_bad_emulate_values_name_the_field(kw: dict[str, float]) -> None:
    """Zero or negative bandwidths and a time scale out of (0, 1] are refused with the key."""
    with pytest.raises(ConfigError, match=next(iter(kw))):
        EmulateConfig(**kw)


def test_step_cost_has_fixed_costs_and_an_efficiency_curve() -> None:
    """Splitting a batch costs the fixed cost per micro-batch and the lost efficiency."""
    c = StepCost(step_fixed_s=0.01, microbatch_fixed_s=0.002, saturate=8,
                 efficiency_exponent=0.5)
    assert c.efficiency(8) == 1.0 and c.efficiency(2) == pytest.approx(0.5)
    whole = c.step_s([16], unit_s=0.001)
    split = c.step_s([8, 8], unit_s=0.001)
    tiny = c.step_s([2] * 8, unit_s=0.001)
    assert whole == pytest.approx(0.01 + 0.002 + 0.016)
    assert split == pytest.approx(whole + 0.002)
    assert tiny == pytest.approx(0.01 + 8 * (0.002 + 0.004))
    assert StepCost().step_s([3, 5], unit_s=0.5) == pytest.approx(4.0)  # linear profile


def test_default_profiles_carry_a_labelled_step_cost() -> None:
    """Every profile's step-cost figures say where they come from."""
    p = get_profile("kunlun-p800")
    cost = p.step_cost("tokens")
    assert cost.step_fixed_s > 0 and cost.origin.startswith("assumed")
    assert 0 < p.mfu <= 1
    with pytest.raises(ConfigError, match="emulate.nic_gbps"):
        LinkPrices(nic_gbps=float("nan"))
