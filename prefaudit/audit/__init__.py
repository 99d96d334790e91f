"""The state of an audit: :class:`~prefaudit.audit.core.AuditCore`, its intents and its persistence."""
