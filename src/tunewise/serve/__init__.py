"""``tunewise serve``: a self-hosted, OpenAI-compatible fine-tuning service.

Modules: ``settings`` (every setting, env ``TUNEWISE_*``), ``store`` (SQLite, migrations), ``auth`` (API keys,
projects), ``errors`` (OpenAI's error body), ``naming`` (model aliases, ``ft:`` names), ``app`` (FastAPI),
``routes/`` (files, jobs, models, chat), ``worker`` (trains queued jobs), ``testing`` (a real server for tests).
"""

from tunewise.serve.settings import Settings

__all__ = ["Settings"]
