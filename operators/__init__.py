"""One module per capability; each stays thin (read settings, submit, apply through addon/)."""
