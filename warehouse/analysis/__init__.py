"""Line-movement queries used by notebooks and the CLI."""
