"""MongoDB's privilege actions: the names a role's privileges may grant.

`PRIVILEGE_ACTIONS` is the MongoDB manual's "Privilege Actions" list (7.x/8.0). mongod refuses a role that
names any other ("Unrecognized action privilege strings"); the portal checks custom permission levels
against it (access.mongodb_actions) and the test wire server refuses role definitions with the same rule.
"""

from __future__ import annotations

_MANUAL_LIST = """
    addShard advanceClusterTime allCollectionStats analyze analyzeShardKey anyAction appendOplogNote
    applicationMessage applyOps auditConfigure auditLogRotate authCheck authenticate authSchemaUpgrade
    bypassDocumentValidation bypassWriteBlockingMode changeCustomData changeOwnCustomData changeOwnPassword
    changePassword changeStream checkFreeMonitoringStatus checkMetadataConsistency cleanupOrphaned
    cleanupStructuredEncryptionData clearJumboFlag closeAllDatabases collMod collStats compact
    compactStructuredEncryptionData configureQueryAnalyzer connPoolStats connPoolSync convertToCapped
    cpuProfiler createCollection createDatabase createIndex createRole createSearchIndexes createUser dbCheck
    dbHash dbStats dropAllRolesFromDatabase dropAllUsersFromDatabase dropCollection dropConnections
    dropDatabase dropIndex dropRole dropSearchIndex dropUser emptycapped enableProfiler enableSharding
    exportCollection find flushRouterConfig forceUUID fsync fsyncUnlock getChangeStreamState
    getClusterParameter getCmdLineOpts getDatabaseVersion getDefaultRWConcern getLog getParameter getShardMap
    getShardVersion grantPrivilegesToRole grantRole grantRolesToRole grantRolesToUser hostInfo impersonate
    importCollection indexStats inprog insert internal invalidateUserCache issueDirectShardOperations
    killAnyCursor killAnySession killCursors killop listCachedAndActiveUsers listCollections listCursors
    listDatabases listIndexes listSampledQueries listSearchIndexes listSessions listShards logRotate
    moveChunk moveCollection netstat oidReset oidcListKeys oidcRefreshKeys operationMetrics
    planCacheIndexFilter planCacheRead planCacheWrite querySettings queryStatsRead queryStatsReadTransformed
    reIndex refineCollectionShardKey remove removeShard renameCollection renameCollectionSameDB
    repairDatabase replSetConfigure replSetGetConfig replSetGetStatus replSetHeartbeat replSetReconfig
    replSetResizeOplog replSetStateChange reshardCollection resync revokePrivilegesFromRole revokeRole
    revokeRolesFromRole revokeRolesFromUser rotateCertificates runAsLessPrivilegedUser runTenantMigration
    serverStatus setAuthenticationRestriction setChangeStreamState setClusterParameter setDefaultRWConcern
    setFeatureCompatibilityVersion setFreeMonitoring setParameter setUserWriteBlockMode shardCollection
    shardedDataDistribution shardingState shutdown splitChunk splitVector storageDetails top touch
    trafficRecord transitionFromDedicatedConfigServer transitionToDedicatedConfigServer unlock update
    updateRole updateSearchIndex updateUser useTenant useUUID validate viewRole viewUser
    """
PRIVILEGE_ACTIONS: frozenset[str] = frozenset(_MANUAL_LIST.split())
