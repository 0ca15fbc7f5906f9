"""The real crds client selecting references offline from a cache written by gpucal.crds_local.

crds keeps per-process state (config, context, mappings by basename, server URL from import
time); ``best_references`` re-points crds whenever the ``CRDS_*`` environment changes or a
cache is rebuilt, so these tests run in one process, each with its own CRDS_PATH.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

pytest.importorskip("crds")
dm = pytest.importorskip("roman_datamodels.datamodels")

from gpucal import crds_local  # noqa: E402
from gpucal.crds_local import (  # noqa: E402
    SELECTION_KEYS,
    CacheEntry,
    best_references,
    build_local_cache,
    crds_info,
    offline_environment,
)
from gpucal.errors import ReferenceFileError  # noqa: E402

DETECTORS = ("WFI01", "WFI02")
FILTERS = ("F062", "F158")
_PATH_OVERRIDES = [
    f"CRDS_{area}{single}"
    for area in ("PATH", "MAPPATH", "REFPATH", "CFGPATH")
    for single in ("_SINGLE", "")
    if (area, single) != ("PATH", "")
]


def _save(model, path: Path, detector: str | None = None, optical_element: str | None = None) -> Path:
    if detector is not None:
        model.meta.instrument.detector = detector
    if optical_element is not None:
        model.meta.instrument.optical_element = optical_element
    model.save(path)
    return path


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory) -> dict[str, Path]:
    """Tiny real reference files: {label: path}."""
    src = tmp_path_factory.mktemp("refs")
    files: dict[str, Path] = {}
    for det in DETECTORS:
        files[f"mask_{det}"] = _save(dm.MaskRefModel.create_fake_data(shape=(8, 8)), src / f"mask_{det}.asdf", det)
        files[f"dark_{det}"] = _save(dm.DarkRefModel.create_fake_data(shape=(2, 8, 8)), src / f"dark_{det}.asdf", det)
        for filt in FILTERS:
            flat = dm.FlatRefModel.create_fake_data(shape=(8, 8))
            files[f"flat_{det}_{filt}"] = _save(flat, src / f"flat_{det}_{filt}.asdf", det, filt)
    files["mask_WFI01_2025"] = _save(
        dm.MaskRefModel.create_fake_data(shape=(8, 8)), src / "mask_WFI01_2025.asdf", "WFI01"
    )
    files["readnoise"] = _save(dm.ReadnoiseRefModel.create_fake_data(shape=(8, 8)), src / "readnoise_any.asdf")
    return files


def _entries(files: dict[str, Path]) -> list[CacheEntry]:
    entries = []
    for det in DETECTORS:
        entries.append(CacheEntry("mask", files[f"mask_{det}"], detector=det))
        entries.append(CacheEntry("dark", files[f"dark_{det}"], detector=det, exposure_type="WFI_IMAGE"))
        entries.extend(
            CacheEntry("flat", files[f"flat_{det}_{filt}"], detector=det, optical_element=filt) for filt in FILTERS
        )
    entries.append(CacheEntry("mask", files["mask_WFI01_2025"], detector="WFI01", useafter="2025-01-01T00:00:00"))
    entries.append(CacheEntry("readnoise", files["readnoise"]))  # any detector, any exposure type
    return entries


def _go_offline(monkeypatch, cache: Path, context: str) -> None:
    for name in _PATH_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    for name, value in offline_environment(cache, context).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def cache(tmp_path, ref_files, monkeypatch) -> Path:
    root = tmp_path / "crds_cache"
    pmap = build_local_cache(root, _entries(ref_files), not_applicable=["integralnonlinearity"])
    assert pmap == "roman_0001.pmap"
    _go_offline(monkeypatch, root, pmap)
    return root


def _params(detector="WFI01", optical_element="F158", exposure_type="WFI_IMAGE", start="2022-06-01T00:00:00.000"):
    return {
        "roman.meta.instrument.name": "WFI",
        "roman.meta.instrument.detector": detector,
        "roman.meta.instrument.optical_element": optical_element,
        "roman.meta.exposure.type": exposure_type,
        "roman.meta.exposure.start_time": start,
    }


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("filt", FILTERS)
def test_selects_by_detector_filter_and_exposure_type(cache, detector, filt):
    refs = best_references(_params(detector, filt), ["mask", "flat", "dark", "readnoise"])
    wfi = cache / "references" / "roman" / "wfi"
    assert refs == {
        "mask": str(wfi / f"mask_{detector}.asdf"),
        "flat": str(wfi / f"flat_{detector}_{filt}.asdf"),
        "dark": str(wfi / f"dark_{detector}.asdf"),
        "readnoise": str(wfi / "readnoise_any.asdf"),
    }


def test_model_crds_parameters_and_useafter(cache):
    model = dm.ScienceRawModel.create_fake_data(shape=(2, 8, 8))
    model.meta.instrument.detector = "WFI01"
    params = model.get_crds_parameters()
    assert Path(best_references(params, ["mask"])["mask"]).name == "mask_WFI01.asdf"
    params["roman.meta.exposure.start_time"] = "2025-03-01T00:00:00.000"
    assert Path(best_references(params, ["mask"])["mask"]).name == "mask_WFI01_2025.asdf"


def test_not_applicable_reftype_gives_na(cache):
    # Declared N/A in the imap, as crds's own template does for integralnonlinearity.
    assert best_references(_params(), ["integralnonlinearity"]) == {"integralnonlinearity": "N/A"}


@pytest.mark.parametrize(
    ("reftype", "params", "reason"),
    [
        ("gain", _params(), "Unknown reference type 'gain'"),  # no rmap for it in the rules
        ("mask", _params(detector="WFI03"), "WFI03"),  # rmap has no such detector
        ("dark", _params(exposure_type="WFI_FLAT"), "WFI_FLAT"),
        ("mask", _params(start="2019-01-01T00:00:00"), "No match found"),  # before every useafter
    ],
)
def test_no_matching_rule_is_reference_file_error(cache, reftype, params, reason):
    with pytest.raises(ReferenceFileError) as info:
        best_references(params, [reftype])
    message = str(info.value)
    assert "\n" not in message
    assert reftype in message and "roman_0001.pmap" in message and str(cache) in message and reason in message


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_no_usable_cache_is_reference_file_error_not_exit(tmp_path, monkeypatch, layout):
    root = tmp_path / "nothing"
    if layout == "empty":
        root.mkdir()
    _go_offline(monkeypatch, root, "roman_0001.pmap")
    with pytest.raises(ReferenceFileError, match=r"mask .*crds exited \(status 255\).*server_config"):
        best_references(_params(), ["mask"])


def test_rules_without_reference_file_is_error(tmp_path, ref_files, monkeypatch):
    root = tmp_path / "c"
    pmap = build_local_cache(root, [CacheEntry("mask", ref_files["mask_WFI01"], detector="WFI01")])
    (root / "references" / "roman" / "wfi" / "mask_WFI01.asdf").unlink()
    _go_offline(monkeypatch, root, pmap)
    with pytest.raises(ReferenceFileError, match="mask"):
        best_references(_params(), ["mask"])


def test_crds_verifies_mapping_checksums(tmp_path, ref_files, monkeypatch):
    from crds.core import rmap

    root = tmp_path / "c"
    pmap = build_local_cache(root, _entries(ref_files))
    mappings = sorted((root / "mappings" / "roman").iterdir())
    assert [p.suffix for p in mappings].count(".rmap") == 4
    for path in mappings:
        rmap.load_mapping(str(path))  # raises ChecksumError on a bad sha1sum
    rules = root / "mappings" / "roman" / "roman_wfi_mask_0001.rmap"
    rules.write_text(rules.read_text().replace("mask_WFI02.asdf", "mask_WFI01.asdf"))
    _go_offline(monkeypatch, root, pmap)
    with pytest.raises(ReferenceFileError, match="sha1sum mismatch"):
        best_references(_params(), ["mask"])


def test_environment_changes_are_followed(tmp_path, ref_files, monkeypatch):
    # Two caches with the same mapping names but different rules: crds memoises mappings by
    # basename, so switching CRDS_PATH (or rebuilding) must reset it.
    first, second = tmp_path / "a", tmp_path / "b"
    build_local_cache(first, [CacheEntry("mask", ref_files["mask_WFI01"], detector="WFI01")])
    build_local_cache(second, [CacheEntry("mask", ref_files["mask_WFI02"], detector="WFI01")])
    _go_offline(monkeypatch, first, "roman_0001.pmap")
    assert Path(best_references(_params(), ["mask"])["mask"]).name == "mask_WFI01.asdf"
    _go_offline(monkeypatch, second, "roman_0001.pmap")
    assert Path(best_references(_params(), ["mask"])["mask"]).name == "mask_WFI02.asdf"
    build_local_cache(second, [CacheEntry("mask", ref_files["mask_WFI01_2025"], detector="WFI01")])
    assert Path(best_references(_params(), ["mask"])["mask"]).name == "mask_WFI01_2025.asdf"


def test_context_from_server_config_and_crds_info(tmp_path, ref_files, monkeypatch):
    import crds

    root = tmp_path / "c"
    pmap = build_local_cache(root, [CacheEntry("mask", ref_files["mask_WFI01"], detector="WFI01")], context_serial=7)
    assert pmap == "roman_0007.pmap"
    _go_offline(monkeypatch, root, pmap)
    monkeypatch.delenv("CRDS_CONTEXT")  # then crds takes server_config's latest context
    assert crds_info() == (crds.__version__, "roman_0007.pmap")
    best_references(_params(), ["mask"])
    assert crds_info() == (crds.__version__, "roman_0007.pmap")


def test_crds_info_without_cache_is_reference_file_error(tmp_path, monkeypatch):
    _go_offline(monkeypatch, tmp_path / "none", "roman_0001.pmap")
    monkeypatch.delenv("CRDS_CONTEXT")
    with pytest.raises(ReferenceFileError, match="status 255"):
        crds_info()


def test_cache_layout_and_reference_copies(cache, ref_files):
    cfg = cache / "config" / "roman"
    assert (cfg / "ref_cache_subdir_mode").read_text() == "instrument"
    server_config = ast.literal_eval((cfg / "server_config").read_text())
    assert server_config["latest_context"] == "roman_0001.pmap"
    assert server_config["observatory"] == "roman"
    installed = cache / "references" / "roman" / "wfi" / "flat_WFI02_F062.asdf"
    assert installed.read_bytes() == ref_files["flat_WFI02_F062"].read_bytes()
    imap = (cache / "mappings" / "roman" / "roman_wfi_0001.imap").read_text()
    assert "'integralnonlinearity' : 'N/A'" in imap


def test_selection_keys_follow_crds_templates():
    import crds
    from crds.core import rmap

    specs = Path(crds.__file__).parent / "roman" / "specs"
    for reftype, keys in SELECTION_KEYS.items():
        template = rmap.ReferenceMapping.from_file(str(specs / f"wfi_{reftype}.rmap"), ignore_checksum=True)
        assert tuple(template.parkey) == (keys, ("ROMAN.META.EXPOSURE.START_TIME",)), reftype


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([CacheEntry("bias", Path("x.asdf"))], "not supported"),
        ([CacheEntry("mask", Path("/no/such/file.asdf"), detector="WFI01")], "not found"),
        (["mask_WFI01:mask:bad value:"], "invalid CRDS match value"),
        (["mask_WFI01:mask:WFI01:", "mask_WFI02:mask:WFI01:"], "two mask files"),
    ],
)
def test_build_rejects_bad_entries(tmp_path, ref_files, entries, match):
    def make(spec):
        if isinstance(spec, CacheEntry):
            return spec
        label, reftype, detector, optical = spec.split(":")
        return CacheEntry(reftype, ref_files[label], detector=detector, optical_element=optical or None)

    with pytest.raises(ReferenceFileError, match=match):
        build_local_cache(tmp_path / "c", [make(spec) for spec in entries])


def test_build_rejects_same_basename_from_two_paths(tmp_path, ref_files):
    other = tmp_path / "elsewhere"
    other.mkdir()
    clash = shutil.copy(ref_files["mask_WFI02"], other / "mask_WFI01.asdf")
    entries = [
        CacheEntry("mask", ref_files["mask_WFI01"], detector="WFI01"),
        CacheEntry("mask", Path(clash), detector="WFI02"),
    ]
    with pytest.raises(ReferenceFileError, match="two different reference files"):
        build_local_cache(tmp_path / "c", entries)


def test_no_reftypes_is_empty_and_env_is_complete(tmp_path):
    assert best_references(_params(), []) == {}
    env = offline_environment(tmp_path, "roman_0003.pmap")
    assert env["CRDS_PATH"] == str(tmp_path.resolve())
    assert "serverless" in env["CRDS_SERVER_URL"]
    assert env["CRDS_MODE"] == "local" and env["CRDS_CONTEXT"] == "roman_0003.pmap"
    assert crds_local.MAX_NETWORK_TIMEOUT_S <= 60
