"""The configuration file: the documented shape loads, bad files fail naming the key, env overrides."""

from pathlib import Path

import pytest

from node.config import ConfigError, load_settings

DOCUMENTED_SHAPE = """
node:
  ae_title: PACSNODE
  host: 0.0.0.0
  port: 11112
  storage_dir: var/pacsnode
  allowed_calling_ae_titles: []
  series_quiet_seconds: 60
  max_associations: 25
queue:
  broker_url: ""
destinations:
  - {name: pacs, ae_title: ORTHANC, host: 10.0.0.5, port: 4242}
routes:
  - {name: chest-ct, match: {Modality: CT}, pipelines: [ct-tissue], destinations: [pacs]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsnode.yaml"
    path.write_text(text)
    return path


def test_documented_shape_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, DOCUMENTED_SHAPE))
    assert settings.node.ae_title == "PACSNODE"
    assert settings.node.port == 11112
    assert settings.embedded_broker
    assert settings.destination("pacs").port == 4242
    assert settings.routes[0].match == {"Modality": "CT"}


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSNODE_NODE__PORT", "11999")
    monkeypatch.setenv("PACSNODE_QUEUE__BROKER_URL", "redis://127.0.0.1:6379/3")
    settings = load_settings(write(tmp_path, DOCUMENTED_SHAPE))
    assert settings.node.port == 11999
    assert settings.node.ae_title == "PACSNODE"
    assert not settings.embedded_broker


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("node:\n  port: seventy\n", "node.port"),
        ("node:\n  prot: 104\n", "node.prot"),
        ("node:\n  ae_title: WAY_TOO_LONG_AE_TITLE_X\n", "node.ae_title"),
        ("node:\n  series_quiet_seconds: -1\n", "node.series_quiet_seconds"),
        ("routes:\n  - {name: r, destinations: [nowhere]}\n", "unknown destination 'nowhere'"),
        ("destinations:\n  - {name: pacs, host: 127.0.0.1}\n", "needs ae_title and host"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    assert named in str(error.value)


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "node: [unclosed"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_a_file_of_an_earlier_release_stays_valid(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "node:\n  index_fsync: false\n  port: 11113\n"))
    assert settings.node.port == 11113
    assert "index_fsync" not in settings.node.model_dump()
