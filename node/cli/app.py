"""The `pacsnode` Typer application; command modules attach their commands to it."""

import typer

app = typer.Typer(
    name="pacsnode",
    help="pacsnode: a DICOM node that runs AI pipelines on received series and returns SEG and SR to PACS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
