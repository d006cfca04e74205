"""Config loading: the shipped YAML against the seed's Part 3, refusals with file + key path, overrides,
config_hash and the state_dim start-up check."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from trainer.config import ConfigError, check_state_dim, load_config, parse_override
from trainer.envs.layout import ObservationLayout

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
PHASE_A = REPO / "configs" / "phase_a_baseline.yaml"
SEED_NAME = Path("seed") / "hierarchical_options_fixes.md"


def _seed_path() -> Path | None:
    candidates = [os.environ.get("TRAINER_SEED_SPEC", ""), REPO / "shared" / SEED_NAME, REPO.parent / "shared" / SEED_NAME]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _seed_scalar(value):
    """PyYAML reads `3e-4` (no dot) as text; the seed means the number."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value):
        return float(value)
    return value


def _seed_options_section() -> dict:
    path = _seed_path()
    if path is None:
        pytest.skip("seed specification shared/seed/hierarchical_options_fixes.md not found (set TRAINER_SEED_SPEC)")
    text = path.read_text()
    part3 = text[text.index("## Part 3") :]
    block = re.search(r"```yaml\n(.*?)```", part3, re.S)
    assert block, "no ```yaml block in Part 3 of the seed"
    tree = yaml.safe_load(block.group(1))
    assert set(tree) == {"options"}
    return tree["options"]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = _seed_scalar(value)
    return out


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# The shipped configs
# --------------------------------------------------------------------------------------------


def test_seed_part3_is_parsed_with_every_section():
    seed = _seed_options_section()
    # The seed's own block, read independently of the code: 6 per-option sections and 19 scalars.
    for name in ("open_long", "open_short", "close_position", "trend_follow", "scalp", "wait"):
        assert isinstance(seed[name], dict)
    assert seed["state_dim"] == 578
    assert _seed_scalar(seed["options_lr"]) == 3e-4


def test_shipped_b1_config_carries_every_seed_options_key_and_value():
    seed = _flatten(_seed_options_section())
    assert len(seed) > 40  # 19 top-level scalars + the per-option blocks
    config = load_config(B1)
    loaded = config.options.model_dump()
    mismatches = []
    for dotted, expected in seed.items():
        node = loaded
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                mismatches.append(f"{dotted}: missing from the loaded config")
                break
            node = node[part]
        else:
            ok = (node is expected) if isinstance(expected, bool) else (node == expected and not isinstance(node, bool))
            if not ok:
                mismatches.append(f"{dotted}: seed {expected!r}, config {node!r}")
    assert not mismatches, "\n".join(mismatches)


def test_shipped_b1_yaml_file_itself_spells_every_seed_key():
    """Not only the defaults: the YAML text lists each seed key under options (so a deletion is seen)."""
    seed = _flatten(_seed_options_section())
    raw = yaml.safe_load(B1.read_text())["options"]
    flat = _flatten(raw)
    missing = sorted(set(seed) - set(flat))
    assert not missing, f"keys of the seed's options section absent from {B1.name}: {missing}"
    different = {k: (seed[k], flat[k]) for k in seed if flat[k] != seed[k]}
    assert not different


def test_b1_is_hierarchical_and_phase_a_is_sac():
    b1 = load_config(B1)
    assert b1.algorithm == "hierarchical_sac" and b1.hierarchical
    a = load_config(PHASE_A)
    assert a.algorithm == "sac"
    assert not a.hierarchical
    assert a.name == "phase_a_baseline"


# --------------------------------------------------------------------------------------------
# Refusals: ConfigError naming the file and the key path
# --------------------------------------------------------------------------------------------


def test_unknown_key_in_file_names_file_and_key_path(tmp_path):
    text = B1.read_text().replace("  scalp:\n    action_scale: 1.0\n    min_duration: 5\n",
                                  "  scalp:\n    action_scale: 1.0\n    min_durration: 5\n")
    assert "min_durration" in text
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "options.scalp.min_durration" in message


def test_unknown_key_via_override_names_key_path():
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.scalp.min_durration": 5})
    assert str(B1) in str(err.value)
    assert "options.scalp.min_durration" in str(err.value)


def test_wrong_type_is_refused_with_key_path():
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.hidden_dim": "wide"})
    assert "options.hidden_dim" in str(err.value)
    assert str(B1) in str(err.value)


def test_negative_min_duration_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.scalp.min_duration": -1})
    assert "options.scalp.min_duration: must be >= 0" in str(err.value)


@pytest.mark.parametrize("value, bound", [(1.5, "must be <= 1"), (-0.1, "must be >= 0")])
def test_action_scale_outside_unit_interval_is_refused(value, bound):
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.open_long.action_scale": value})
    assert f"options.open_long.action_scale: {bound}" in str(err.value)


def test_min_temperature_above_temperature_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.min_temperature": 2.0, "options.temperature": 1.0})
    assert "min_temperature" in str(err.value)


def test_use_amp_true_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"options.use_amp": True})
    assert "use_amp" in str(err.value)


@pytest.mark.parametrize("symbol", ["../etc/passwd", "spy", "", "A B"])
def test_bad_symbol_is_refused(symbol):
    with pytest.raises(ConfigError) as err:
        load_config(B1, {"data.symbol": symbol})
    assert "data.symbol" in str(err.value)


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "not found" in str(err.value)


def test_invalid_yaml_is_refused(tmp_path):
    path = _write(tmp_path, "name: x\nalgorithm: [sac\n  options: {\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "YAML" in str(err.value)


def test_top_level_list_is_refused(tmp_path):
    path = _write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError):
        load_config(path)


# --------------------------------------------------------------------------------------------
# Overrides and the hash
# --------------------------------------------------------------------------------------------


def test_dotted_overrides_apply():
    config = load_config(
        B1,
        {
            "sac.net_arch": [32, 32],
            "options.hidden_dim": 32,
            "options.scalp.min_duration": 7,
            "environment.window_size": 10,
            "options.state_dim": 108,
        },
    )
    assert config.sac.net_arch == [32, 32]
    assert config.options.hidden_dim == 32
    assert config.options.scalp.min_duration == 7
    assert config.environment.window_size == 10
    assert config.options.state_dim == 108
    # untouched neighbours keep the file's values
    assert config.options.scalp.max_steps == 15
    assert config.options.open_long.min_duration == 5


def test_parse_override_reads_yaml_values():
    assert parse_override("sac.net_arch=[64, 64]") == ("sac.net_arch", [64, 64])
    assert parse_override("options.enabled=false") == ("options.enabled", False)
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")
    # a scientific literal without a dot passed through load_config ends up a float
    key, value = parse_override("options.options_lr=1e-3")
    assert load_config(B1, {key: value}).options.options_lr == pytest.approx(1e-3)


def test_config_hash_is_stable_and_changes_with_a_value():
    first = load_config(B1).config_hash()
    assert load_config(B1).config_hash() == first
    assert load_config(B1, {"options.entropy_bonus": 0.01}).config_hash() == first  # same value
    assert load_config(B1, {"options.entropy_bonus": 0.02}).config_hash() != first
    assert load_config(B1, {"options.wait.min_duration": 6}).config_hash() != first
    assert load_config(PHASE_A).config_hash() != first


# --------------------------------------------------------------------------------------------
# state_dim against the observation
# --------------------------------------------------------------------------------------------


def test_state_dim_matches_observation_of_shipped_config():
    config = load_config(B1)
    size = ObservationLayout(config.environment.window_size).size
    assert size == 57 * 10 + 8 == 578
    check_state_dim(config, 578)  # no error


def test_window_size_change_names_both_numbers():
    config = load_config(B1, {"environment.window_size": 10})
    size = ObservationLayout(10).size
    assert size == 108
    with pytest.raises(ConfigError) as err:
        check_state_dim(config, size)
    assert "578" in str(err.value) and "108" in str(err.value)


def test_state_dim_check_is_skipped_for_phase_a():
    config = load_config(PHASE_A, {"environment.window_size": 10})
    check_state_dim(config, ObservationLayout(10).size)
