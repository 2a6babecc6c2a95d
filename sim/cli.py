"""``simctl`` command line: a thin layer over the Python API.

Each sub-command lives in ``sim/commands/<name>.py`` as a click object named ``command``; it is
imported only when invoked, so ``simctl --help`` stays fast. Errors derived from
:class:`sim.errors.SimctlError` are printed as one line (no traceback) with exit code 2.
"""
from __future__ import annotations

import importlib
import sys

import click

from sim.errors import SimctlError

# sub-command name -> (module under sim.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "Simulate an experiment YAML and write summary, per-request records and a report."),
    "model": ("model", "Inspect model architectures: parameters, KV-cache bytes, breakdown."),
    "hw": ("hw", "List and show hardware profiles."),
    "estimate": ("estimate", "Static roofline estimate: prefill/decode latency, memory plan, MFU/MBU."),
    "capacity": ("capacity", "Find the maximum request rate (or replicas) that meets the SLO."),
    "sweep": ("sweep", "Run a grid of configurations (locally in parallel or on Ray)."),
    "report": ("report", "Write report.html and report.md for a run or sweep directory."),
    "calibrate": ("calibrate", "Fit a hardware profile to measurements and write a new profile YAML."),
    "compare": ("compare", "Compare a simulated run with a real benchmark result."),
    "validate": ("validate", "Replay the bundled calibration runs and print the error table."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, help_text = COMMANDS[name]
        try:
            mod = importlib.import_module(f"sim.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sim.commands.{module_name}":
                return None
            raise
        cmd = mod.command
        cmd.help = cmd.help or help_text
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simctl")
def cli() -> None:
    """simctl — discrete-event simulator of LLM serving (latency tails, fluidity, goodput, capacity).

    \b
    Main tasks, one example each (files in experiments/):
      simulate a deployment     simctl run experiments/quickstart.yaml
      tensor-parallel sweep     simctl sweep experiments/llama70b-sweep.yaml
      MLPerf SLO preset         simctl capacity experiments/capacity_llama31_8b_mlperf_server.yaml
      cost per token            simctl run experiments/quickstart.yaml --set cost.gpu_hour_usd=2.5
      trace replay              simctl run experiments/azure_conv_replay.yaml
      against a real benchmark  simctl compare results/quickstart vllm_result.json
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, printing user errors without a traceback."""
    try:
        cli.main(args=argv, prog_name="simctl", standalone_mode=False)
    except SimctlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
