"""Looking at a trained model: attention maps and their plots, grounding, `python -m vqa.inspection.predict`, the
Gradio demo, report.html for a run or a sweep, and the sweep table."""
