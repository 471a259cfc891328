"""Writes to the domain. Every service that changes state records its AuditEvent in the same transaction.

Import services from their modules (`from access.services.audit import audit_record`).
"""
