variable "name" {
  description = "Prefix of every resource name (functions, tables, role, API)."
  type        = string
  default     = "rust-lambda-api"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "artifacts_dir" {
  description = "Directory of `cargo xtask build`'s manifest.json; the zips' paths in it are relative to it. Relative paths are relative to Terraform's working directory."
  type        = string
  default     = "../target/lambda"
}

variable "accept_watch_builds" {
  description = "Whether a function may run a `cargo xtask dev --watch` build (the quick, unoptimised profile) instead of a release build. The local stack sets it; real stages run release builds only."
  type        = bool
  default     = false
}

variable "memory_size" {
  description = "Memory of every function, in MB."
  type        = number
  default     = 128

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size: Lambda allows 128 to 10240 MB."
  }
}

variable "timeout" {
  description = "Timeout of every function, in seconds. Kept below API Gateway's 29 s integration timeout so a slow function fails as itself, not as a gateway timeout."
  type        = number
  default     = 10

  validation {
    condition     = var.timeout >= 1 && var.timeout < 29
    error_message = "timeout: 1 to 28 seconds (API Gateway gives up at 29 s)."
  }
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the functions' logs, in days."
  type        = number
  default     = 14
}

variable "prod_deletion_protection" {
  description = "Whether prod's DynamoDB tables refuse DeleteTable (deletion protection). `cargo xtask destroy --delete-data` sets it false for the tables it destroys; leave it true otherwise."
  type        = bool
  default     = true
}

variable "throttling_rate_limit" {
  description = "Steady-state requests per second each stage accepts (per method)."
  type        = number
  default     = 50
}

variable "throttling_burst_limit" {
  description = "Burst of requests each stage accepts (per method)."
  type        = number
  default     = 100
}

variable "files_url_expiry_seconds" {
  description = "How long the files function's presigned upload and download URLs are valid, in seconds. At most an hour here (the function itself accepts SigV4's 7 days): a URL signed with the role's temporary credentials stops working when they expire anyway, and a URL still valid after its record is deleted can still upload."
  type        = number
  default     = 900

  validation {
    condition     = var.files_url_expiry_seconds >= 1 && var.files_url_expiry_seconds <= 3600 && floor(var.files_url_expiry_seconds) == var.files_url_expiry_seconds
    error_message = "files_url_expiry_seconds: whole seconds, 1 to 3600."
  }
}

variable "usage_plan" {
  description = "Each stage's usage plan, for the callers of key-required routes (per API key): steady requests per second, burst, and requests per day (UTC)."
  type = object({
    rate_limit  = number
    burst_limit = number
    daily_quota = number
  })
  default = {
    rate_limit  = 10
    burst_limit = 20
    daily_quota = 10000
  }

  validation {
    condition     = var.usage_plan.rate_limit > 0 && var.usage_plan.burst_limit >= 1 && var.usage_plan.daily_quota >= 1
    error_message = "usage_plan: rate_limit above 0, burst_limit and daily_quota at least 1."
  }
}

variable "api_key_consumers" {
  description = "Who gets API keys: one key per name and stage (`cargo xtask apikey NAME --stage S` prints it)."
  type        = set(string)
  default     = ["example"]

  validation {
    condition     = alltrue([for consumer in var.api_key_consumers : can(regex("^[a-z][a-z0-9-]{0,30}$", consumer))])
    error_message = "api_key_consumers: names of 1-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "alarms" {
  description = <<-EOT
    The CloudWatch alarms (alarms.tf): each evaluates `evaluation_periods`
    periods of `period_seconds` and fires when `datapoints_to_alarm` of them
    breach. Per function and alias: the error rate in percent (every error
    a function returns counts, its 4xx answers too, as a non-proxy
    integration learns the status from the error), throttles per period,
    and the p99 duration as a share of the function's timeout; per stage:
    the share of 5xx answers in percent and the p99 latency in ms. A
    canary's own alarms (the new version's error rate and p99 duration)
    use the same thresholds. Periods of 10 and 30 s suit the local stack's
    quick rehearsals only: Lambda and API Gateway publish per minute.
  EOT
  type = object({
    period_seconds      = optional(number, 60)
    evaluation_periods  = optional(number, 1)
    datapoints_to_alarm = optional(number, 1)
    error_rate_percent  = optional(number, 5)
    throttles           = optional(number, 0)
    duration_p99_share  = optional(number, 0.8)
    api_5xx_percent     = optional(number, 1)
    api_latency_p99_ms  = optional(number, 5000)
  })
  default = {}

  validation {
    condition     = contains([10, 30], var.alarms.period_seconds) || (var.alarms.period_seconds >= 60 && var.alarms.period_seconds % 60 == 0)
    error_message = "alarms.period_seconds: 10, 30, or a multiple of 60 (what CloudWatch alarms accept)."
  }

  validation {
    condition     = var.alarms.evaluation_periods >= 1 && var.alarms.datapoints_to_alarm >= 1 && var.alarms.datapoints_to_alarm <= var.alarms.evaluation_periods
    error_message = "alarms: evaluation_periods at least 1, datapoints_to_alarm from 1 to evaluation_periods."
  }

  validation {
    condition     = var.alarms.duration_p99_share > 0 && var.alarms.duration_p99_share <= 1
    error_message = "alarms.duration_p99_share: a share of the timeout, above 0 and at most 1."
  }
}

variable "alarm_emails" {
  description = "Who the alarms notify: each address is subscribed to the alarms' SNS topic (it must confirm the subscription). Empty: the topic only."
  type        = set(string)
  default     = []
}

variable "tracing" {
  description = "X-Ray tracing on the functions (Active) and on both stages."
  type        = bool
  default     = true
}

variable "execution_logging_level" {
  description = "API Gateway's execution logging on both stages (to API-Gateway-Execution-Logs_<api id>/<stage>): OFF, ERROR or INFO."
  type        = string
  default     = "ERROR"

  validation {
    condition     = contains(["OFF", "ERROR", "INFO"], var.execution_logging_level)
    error_message = "execution_logging_level: OFF, ERROR or INFO."
  }
}

variable "api_gateway_account" {
  description = "Whether this stack sets the region's API Gateway account setting: the CloudWatch role API Gateway writes access and execution logs with. There is one per account and region, shared by every API there (a destroy of this stack removes it): false where the account has one already."
  type        = bool
  default     = true
}

variable "prod_release" {
  description = <<-EOT
    What the prod stage serves: the published version each function's `prod`
    alias points at, and the API revision the prod stage was deployed from.
    Written by `cargo xtask publish` and `cargo xtask rollback` into
    prod.auto.tfvars.json; commit that file, its history is the release log.
    A function missing from `functions` has no prod alias (prod does not serve
    it); `release` 0 means nothing has been published yet.

    During a canary (`cargo xtask publish --canary PERCENT`), `canary` names
    the release in flight: the new version of each function that changes,
    which its prod alias routes PERCENT of invocations to (Lambda's
    weighted alias), while `functions` still names the versions the rest
    go to; `publish --promote`, or the end of a healthy bake, moves them
    wholly; `--abort`, or an alarm, removes the weights.
  EOT
  type = object({
    release      = number
    note         = string
    functions    = map(string)
    api_revision = string
    canary = optional(object({
      release      = number
      note         = string
      percent      = number
      versions     = map(string)
      started_at   = string
      bake_seconds = number
    }))
  })

  validation {
    condition     = alltrue([for version in values(var.prod_release.functions) : can(regex("^[1-9][0-9]*$", version))])
    error_message = "prod_release.functions: each value is a published version number (\"1\", \"2\", ...), never $LATEST."
  }

  validation {
    condition = var.prod_release.canary == null ? true : (
      var.prod_release.canary.percent >= 1 && var.prod_release.canary.percent <= 99
      && length(var.prod_release.canary.versions) > 0
      && alltrue([for function, version in var.prod_release.canary.versions :
        can(regex("^[1-9][0-9]*$", version)) && lookup(var.prod_release.functions, function, version) != version
      ])
    )
    error_message = "prod_release.canary: percent 1 to 99, and for each function a published version other than the one prod routes the rest to (a function prod serves)."
  }
}
