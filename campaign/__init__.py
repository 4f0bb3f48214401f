"""Appeal sender: supporters' Urgent Action appeals, delivered by e-mail.

The pipeline reads in module order: ``intake`` (form input) → ``appeals`` (the
appeal and its states) → ``letters`` (rendering) → ``queue``/``jobs`` (RQ) →
``delivery`` (SMTP) → status in the database.
"""
