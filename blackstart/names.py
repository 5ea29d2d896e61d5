"""The one definition of the names blackstart puts on a cluster.

The rescue API group and its kinds, the annotations and labels the controller,
the agent, the chaos actions, the probes and the cluster specs share.
"""

# --- the rescue CRDs -------------------------------------------------------------------
RESCUE_GROUP = "rescue.blackstart.dev"
RESCUE_VERSION = "v1"
RESCUE_API_VERSION = f"{RESCUE_GROUP}/{RESCUE_VERSION}"
RESCUE_PLANS = "rescueplans"
RESCUE_POLICIES = "rescuepolicies"
WARM_STANDBY_POLICIES = "warmstandbypolicies"
#: on every RescuePlan the controller runs: a plan deleted mid-run first releases its node
PLAN_FINALIZER = f"{RESCUE_GROUP}/release-node"
#: phases after which a RescuePlan never changes again
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Refused"})

# --- annotations the controller writes -------------------------------------------------
CORDONED_BY_ANNOTATION = f"{RESCUE_GROUP}/cordoned-by"
NODE_WAS_CORDONED_ANNOTATION = f"{RESCUE_GROUP}/node-was-cordoned"
REBOOT_REQUESTED_ANNOTATION = f"{RESCUE_GROUP}/reboot-requested"
REPLACES_ANNOTATION = f"{RESCUE_GROUP}/replaces"
#: the reportingController of the agent's Events
AGENT_REPORTER = f"{RESCUE_GROUP}/agent"
#: the reportingController of the controller's Events
CONTROLLER_REPORTER = f"{RESCUE_GROUP}/controller"

# --- annotations the chaos actions write ----------------------------------------------
#: on an object a chaos action replaced: what it was (JSON), so its rollback restores it
ORIGINAL_ANNOTATION = "blackstart.dev/original"

# --- node labels of a blackstart fleet -------------------------------------------------
POOL_LABEL = "blackstart.dev/pool"
ROLE_LABEL = "blackstart.dev/role"
STANDBY_LABEL = "blackstart.dev/standby"
GPU_RESOURCE = "nvidia.com/gpu"
#: GPU feature discovery's label: how many GPUs the node has, whatever the device plugin says
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
