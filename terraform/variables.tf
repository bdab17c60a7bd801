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

variable "prod_release" {
  description = <<-EOT
    What the prod stage serves: the published version each function's `prod`
    alias points at, and the API revision the prod stage was deployed from.
    Written by `cargo xtask publish` and `cargo xtask rollback` into
    prod.auto.tfvars.json; commit that file, its history is the release log.
    A function missing from `functions` has no prod alias (prod does not serve
    it); `release` 0 means nothing has been published yet.
  EOT
  type = object({
    release      = number
    note         = string
    functions    = map(string)
    api_revision = string
  })

  validation {
    condition     = alltrue([for version in values(var.prod_release.functions) : can(regex("^[1-9][0-9]*$", version))])
    error_message = "prod_release.functions: each value is a published version number (\"1\", \"2\", ...), never $LATEST."
  }
}
