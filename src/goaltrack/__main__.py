from goaltrack.cli import app

app()
