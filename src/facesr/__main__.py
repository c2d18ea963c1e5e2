from facesr.cli.main import entrypoint

entrypoint()
