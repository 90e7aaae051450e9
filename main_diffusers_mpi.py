"""Train or evaluate SnapPose on MPI-INF-3DHP: `python main_diffusers_mpi.py --help`."""
from common.run.cli import main as cli_main


def main(argv=None):
    """Run the command line on ``argv`` (None: sys.argv); returns the exit status."""
    return cli_main("mpi", argv)


if __name__ == "__main__":
    raise SystemExit(main())
