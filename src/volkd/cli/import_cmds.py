"""``volkd import``: scans (NIfTI, DICOM, NPZ/NPY, PPMI downloads) + labels → a cohort."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from volkd.cli.app import app
from volkd.errors import ConfigError

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console()


def _parse_grid(text: str) -> tuple[int, int, int] | None:
    if text.strip().lower() == "native":
        return None
    try:
        parts = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--grid {text!r}: expected a size (64), three sizes (64,64,64) or 'native'") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise ConfigError(f"--grid {text!r}: expected one or three sizes")
    return tuple(parts)  # type: ignore[return-value]


@app.command("import")
def import_cmd(
    source: Path = typer.Argument(..., help="Folder of NIfTI files / DICOM series folders, an NPZ/NPY file, a PPMI download folder, or a BIDS root (with --bids)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cohort directory to create."),
    labels: Path = typer.Option(None, "--labels", help="Labels CSV (one row per scan)."),
    id_col: str = typer.Option("scan_id", "--id-col", help="Labels CSV column with the scan ID (file name without extension, or DICOM folder name)."),
    subject_col: str = typer.Option("subject_id", "--subject-col", help="Labels CSV column with the subject ID."),
    visit_col: str = typer.Option("visit", "--visit-col", help="Labels CSV column with the visit (number or code such as BL, V04)."),
    label_col: str = typer.Option(None, "--label-col", help="Column with the diagnosis/label: of the labels CSV (default 'label') or of participants.tsv / sessions.tsv (--bids; default 'group')."),
    mapping: str = typer.Option(None, "--map", help="Label mapping, e.g. 'PD=PD,Control=control'; unmapped values are excluded and counted."),
    classes: str = typer.Option(None, "--classes", help="Class names in index order, e.g. 'control,PD' (MedMNIST: names for 0,1,…)."),
    grid: str = typer.Option("64", "--grid", help="Target grid: 64, 64,64,64, or 'native' to keep the inputs' grid."),
    space: str = typer.Option(None, "--space", help="Placement: mni (scans already in MNI space; default for scans) or fov (the scan's own field of view; arrays)."),
    crop: bool = typer.Option(False, "--crop", help="Crop to the brain's bounding box before resampling (with --space fov)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable or blank scans (all NaN/Inf, constant, empty brain mask; listed in skipped.csv) instead of stopping."),
    force: bool = typer.Option(False, "--force", help="Replace an existing cohort directory (never the source, nor a folder of other files)."),
    ppmi_csv: Path = typer.Option(None, "--ppmi-csv", help="PPMI image-collection CSV: SOURCE is then the PPMI download folder."),
    include_groups: str = typer.Option(None, "--include-groups", help="Extra PPMI groups to import, e.g. 'SWEDD=control,Prodromal' (a name alone is its own class)."),
    modality: str = typer.Option(None, "--modality", help="Modality recorded in cohort.json (default: from the files, or the BIDS suffix)."),
    bids: bool = typer.Option(False, "--bids", help="SOURCE is a BIDS dataset: scans found by pybids (pip install 'volkd[bids]'), labels from participants.tsv."),
    suffix: str = typer.Option("pet", "--suffix", help="BIDS: the scans' suffix (…_pet.nii.gz; for SPECT the suffix your dataset uses, e.g. spect)."),
    derivatives: str = typer.Option(None, "--derivatives", help="BIDS: import the scans of this derivatives/ pipeline (or 'all') instead of the raw data."),
    bids_filter: str = typer.Option(None, "--bids-filter", help="BIDS: keep scans whose names carry these entities, e.g. 'trc=DaT,rec=acstat'."),
    stack_2d: bool = typer.Option(False, "--stack-2d", help="Read a 3-D array (NPZ 'images' or NPY of shape N×H×W) as ONE volume made of its N slices (refused otherwise: it may be N 2-D images)."),
) -> None:
    """Import scans (NIfTI, DICOM, NPZ/NPY, PPMI, BIDS) with their labels into a cohort."""
    from volkd.data.importer import REPORT_FILE, import_scans

    class_names = [c.strip() for c in classes.split(",")] if classes else None
    if bids:
        from volkd.data.bids import import_bids

        given = [opt for opt, val, default in (("--labels", labels, None), ("--ppmi-csv", ppmi_csv, None), ("--id-col", id_col, "scan_id"),
                                               ("--subject-col", subject_col, "subject_id"), ("--visit-col", visit_col, "visit"),
                                               ("--include-groups", include_groups, None)) if val != default]
        if given:
            raise ConfigError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --bids: subjects and sessions come from the BIDS "
                              "entities and labels from participants.tsv (--label-col)")
        result = import_bids(source, out, label_column=label_col or "group", suffix=suffix, label_map=mapping,
                             class_names=class_names, derivatives=derivatives, filters=bids_filter, target_grid=_parse_grid(grid),
                             space=space, crop=crop, skip_bad=skip_bad, force=force, modality=modality)
    else:
        bids_only = [opt for opt, val, default in (("--suffix", suffix, "pet"), ("--derivatives", derivatives, None),
                                                   ("--bids-filter", bids_filter, None)) if val != default]
        if bids_only:
            raise ConfigError(f"{', '.join(bids_only)} {'applies' if len(bids_only) == 1 else 'apply'} to BIDS datasets only: add --bids")
        result = import_scans(
            source, out, labels_csv=labels, id_column=id_col, subject_column=subject_col, visit_column=visit_col,
            label_column=label_col or "label", label_map=mapping, class_names=class_names,
            target_grid=_parse_grid(grid), space=space, crop=crop, skip_bad=skip_bad, force=force, modality=modality,
            ppmi_csv=ppmi_csv, include_groups=include_groups, stack_2d=stack_2d,
        )
    for line in result.summary.lines():
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"cohort written to {out} (report: {out / REPORT_FILE})", highlight=False, soft_wrap=True)
