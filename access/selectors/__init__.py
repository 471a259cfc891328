"""Reads from the domain: what a user may see and reach, and checks over stored data.

Import selectors from their modules (`from access.selectors.policies import access_grant_for`);
the audit chain check is re-exported here for the management command.
"""

from access.selectors.audit import AuditChainReport, audit_chain_verify

__all__ = ["AuditChainReport", "audit_chain_verify"]
