"""One router per API noun: files, fine-tuning jobs, models, chat completions."""
