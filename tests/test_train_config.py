"""Training config: YAML + --set overrides, validation errors that name file, line and field."""

from __future__ import annotations

import pytest

from distill_doctor.cli import main
from distill_doctor.errors import InputError
from distill_doctor.train.config import TrainConfig, describe_fields, load_config, parse_override

GOOD = """\
method: gkd
student: s
teacher: t
data: d.jsonl
output_dir: out
loss:
  temperature: 2.0
gkd:
  lmbda: 0.25
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_loads_typed_fields_and_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.method == "gkd" and cfg.gkd.lmbda == 0.25 and cfg.loss.temperature == 2.0
    assert cfg.output_dir == "out"  # relative to the working directory, as given
    again = load_config(write(tmp_path, cfg.to_yaml(), "again.yaml"))
    assert again == cfg


def test_relative_input_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "d.jsonl").write_text("", encoding="utf-8")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.data == str(tmp_path / "d.jsonl")
    assert cfg.student == "s"  # nothing named s there: kept as written


def test_overrides_parse_values_as_yaml_and_reach_nested_groups(tmp_path):
    cfg = load_config(
        write(tmp_path, GOOD),
        ["loss.beta=0.3", "gkd.seq_kd=true", "max_grad_norm=null", "steps=7", "epochs=1.5", "lr=5e-3"],
        seed=9,
    )
    assert cfg.loss.beta == 0.3 and cfg.gkd.seq_kd is True and cfg.max_grad_norm is None
    assert cfg.steps == 7 and cfg.epochs == 1.5 and cfg.seed == 9 and cfg.lr == 0.005
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")
    assert load_config(write(tmp_path, GOOD), ["mixed_precision=no"]).mixed_precision == "no"


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        (GOOD.replace("temperature: 2.0", "temperature: -1"), 7, "loss.temperature"),
        (GOOD.replace("lmbda: 0.25", "lmbda: 1.5"), 9, "gkd.lmbda"),
        (GOOD.replace("method: gkd", "method: dpo"), 1, "method"),
        (GOOD + "stepz: 3\n", None, "stepz"),
        (GOOD + "steps: many\n", 10, "steps"),
        (GOOD + "batch_size: true\n", 10, "batch_size"),
        (GOOD.replace("teacher: t\n", ""), None, "teacher"),
        (GOOD + "topk_cache: c\n", 10, "topk_cache"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, line, field):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_config(path)
    err = info.value
    assert (err.path, err.field) == (str(path), field)
    if line is not None:
        assert err.line == line
    assert str(path) in str(err) and field in str(err)


def test_override_errors_say_they_came_from_the_command_line(tmp_path):
    with pytest.raises(InputError, match="command line") as info:
        load_config(write(tmp_path, GOOD), ["loss.beta=3"])
    assert info.value.field == "loss.beta"
    with pytest.raises(InputError, match="key=value"):
        load_config(write(tmp_path, GOOD), ["loss.beta"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        load_config(write(tmp_path, "method: [sft\n"))
    assert info.value.line is not None
    with pytest.raises(InputError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_every_field_has_help():
    rows = describe_fields()
    assert {name for name, _, _ in rows} >= {"loss.divergence", "gkd.lmbda", "skd.top_k", "steps", "resume"}
    assert all(help_text for _, help_text, _ in rows)


def test_direct_construction_validates():
    with pytest.raises(InputError) as info:
        TrainConfig(
            method="skd", student="s", teacher="t", data="d", output_dir="o", loss={"hard_weight": 0.5}
        )
    assert info.value.field is not None
    TrainConfig(method="sft", student="s", data="d", output_dir="o")


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("lmbda: 0.25", "lmbda: 7"))
    assert main(["train", "gkd", "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9: field 'gkd.lmbda'" in err and "Traceback" not in err


@pytest.mark.parametrize("method", ["sft", "logit_kd", "gkd", "skd"])
def test_shipped_example_configs_are_valid(method):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"{method}.yaml"
    cfg = load_config(path)
    assert cfg.method == method


def test_dashed_method_name_is_accepted_on_the_command_line():
    from distill_doctor.cli import build_parser

    args = build_parser().parse_args(["train", "logit-kd", "--config", "cfg.yaml"])
    assert args.method == "logit_kd"
