"""Train or evaluate SnapPose on Human3.6M: `python main_diffusers_h36m.py --help`."""
from common.run.cli import main as cli_main


def main(argv=None):
    """Run the command line on ``argv`` (None: sys.argv); returns the exit status."""
    return cli_main("h36m", argv)


if __name__ == "__main__":
    raise SystemExit(main())
