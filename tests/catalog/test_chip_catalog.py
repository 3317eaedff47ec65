"""The packaged chip catalog: complete, sourced, explicit about unknowns, strict on bad files."""

from __future__ import annotations

import pytest

from mixfleet.catalog import get_chip, load_catalog, match_chip
from mixfleet.errors import ConfigError

REQUIRED = ["nvidia-a100", "nvidia-h100", "nvidia-h800", "nvidia-h20", "nvidia-h200",
            "nvidia-l40s", "nvidia-a10", "nvidia-t4", "nvidia-v100", "nvidia-p100",
            "ascend-910b", "ascend-910c", "kunlun-p800", "thead-ppu", "cambricon-mlu370-x8",
            "cambricon-mlu590", "amd-mi300x", "intel-gaudi2", "intel-gaudi3"]


def test_catalog_has_every_chip_the_issue_lists():
    """Every chip named in issue 3 has a record."""
    assert set(REQUIRED) <= set(load_catalog())


def test_every_figure_has_source_and_unknown_means_none():
    """Each figure names a source; a figure is None exactly when its confidence is unknown."""
    for chip in load_catalog().values():
        for name in ("bf16_tflops", "hbm_gib", "hbm_tbps", "link_gbps", "tdp_w"):
            fig = getattr(chip, name)
            assert fig.source
            assert (fig.value is None) == (fig.confidence == "unknown"), (chip.id, name)


def test_unknown_peak_gives_no_peak_flops():
    """A chip without a BF16 figure reports no peak rather than a guess."""
    assert get_chip("nvidia-t4").peak_flops() is None
    assert get_chip("nvidia-h100").peak_flops() == pytest.approx(989e12)


def test_cuda_presenting_vendors_are_not_nvidia():
    """Kunlun and PPU present as cuda in PyTorch but are not Nvidia."""
    for cid in ("kunlun-p800", "thead-ppu"):
        chip = get_chip(cid)
        assert chip.torch_device == "cuda" and not chip.is_nvidia


@pytest.mark.parametrize("name,chip_id", [
    ("NVIDIA A100-SXM4-80GB", "nvidia-a100"), ("NVIDIA A10", "nvidia-a10"),
    ("NVIDIA H20", "nvidia-h20"), ("NVIDIA H200", "nvidia-h200"), ("910B3", "ascend-910b"),
    ("MLU370-X8", "cambricon-mlu370-x8"), ("P800", "kunlun-p800"), ("Tesla T4", "nvidia-t4"),
    ("NVIDIA A100-PCIE-40GB", None), ("Some Future Chip", None),
])
def test_tool_names_map_to_catalog_ids(name, chip_id):
    """Names as tools print them map to the right record, and A10 is not A100."""
    chip = match_chip(name)
    assert (chip.id if chip else None) == chip_id


def test_unknown_chip_id_names_known_ones():
    """An unknown id raises ConfigError listing known ids."""
    with pytest.raises(ConfigError, match="unknown chip id 'nvidia-h9000'.*nvidia-h20"):
        get_chip("nvidia-h9000")


@pytest.mark.parametrize("text,match", [
    ("[[chip]\nid=", "not valid TOML"),
    ("x = 1", "no \\[\\[chip\\]\\] tables"),
    ('[[chip]]\nid="a"\nvendor="v"\nname="n"\ntorch_device="cuda"\n'
     'bf16_tflops={value=-1, source="s", confidence="reported"}', "bf16_tflops.value is -1"),
    ('[[chip]]\nid="a"\nvendor="v"\nname="n"\ntorch_device="cuda"\naliases="H20"',
     "aliases is 'H20'"),
])
def test_malformed_catalog_is_a_config_error(tmp_path, text, match):
    """A malformed catalog file raises ConfigError naming what is wrong."""
    p = tmp_path / "chips.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_catalog(p)
