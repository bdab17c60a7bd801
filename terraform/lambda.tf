# The functions come from `cargo xtask build`'s manifest: Terraform never
# zips anything, and a function's code changes exactly when its zip's
# SHA-256 does (the zips are reproducible, so a rebuild of the same source
# plans nothing).
locals {
  manifest = jsondecode(file("${var.artifacts_dir}/manifest.json"))

  functions = {
    for name, artifact in local.manifest.functions : name => {
      filename         = "${var.artifacts_dir}/${artifact.path}"
      source_code_hash = artifact.code_sha256
      # Manifests written before builds had profiles held release builds only.
      profile = try(artifact.profile, "release")
    }
  }

  # Each function's Lambda name: the functions and the API's integrations
  # (and so the API revision) take it from here.
  function_names = { for name in keys(local.functions) : name => "${var.name}-${name}" }

  # The stage-to-table configuration every function receives.
  environment = {
    USERS_TABLE_STAGING  = aws_dynamodb_table.users["staging"].name
    USERS_TABLE_PROD     = aws_dynamodb_table.users["prod"].name
    CHIRPS_TABLE_STAGING = aws_dynamodb_table.chirps["staging"].name
    CHIRPS_TABLE_PROD    = aws_dynamodb_table.chirps["prod"].name
    FILES_TABLE_STAGING  = aws_dynamodb_table.files["staging"].name
    FILES_TABLE_PROD     = aws_dynamodb_table.files["prod"].name
    FILES_BUCKET_STAGING = aws_s3_bucket.files["staging"].bucket
    FILES_BUCKET_PROD    = aws_s3_bucket.files["prod"].bucket
    # How long the files function's presigned URLs are valid.
    FILES_URL_EXPIRY_SECONDS = tostring(var.files_url_expiry_seconds)
  }
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:encrypted at rest by CloudWatch Logs; a customer-managed KMS key is an account decision
  #checkov:skip=CKV_AWS_338:retention is var.log_retention_days (14 days by default), a cost choice per stack
  for_each = local.functions

  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_115:the functions share the account's unreserved concurrency; a reserved limit per function is a capacity decision
  #checkov:skip=CKV_AWS_116:invoked synchronously by API Gateway only; a DLQ receives failed asynchronous invocations alone
  #checkov:skip=CKV_AWS_117:no VPC resources to reach (only the DynamoDB, S3 and Logs APIs); a VPC would add subnets, VPC links or NAT for nothing
  #checkov:skip=CKV_AWS_173:the variables are table and bucket names and a URL expiry, no secrets; Lambda encrypts them at rest with its AWS-managed key
  #checkov:skip=CKV_AWS_272:code is pinned by content instead: verify and publish bind each zip's CodeSha256; a signing profile is an account decision
  for_each = local.functions

  function_name    = local.function_names[each.key]
  role             = aws_iam_role.this.arn
  runtime          = local.manifest.runtime
  architectures    = [local.manifest.architecture]
  handler          = "bootstrap"
  filename         = each.value.filename
  source_code_hash = each.value.source_code_hash
  memory_size      = var.memory_size
  timeout          = var.timeout
  # A watch build says so on the function itself, wherever it runs (and
  # `cargo xtask verify` refuses to vouch for it).
  description = each.value.profile == "release" ? null : "${each.value.profile} build (cargo xtask dev --watch): never published"

  environment {
    variables = local.environment
  }

  tracing_config {
    mode = var.tracing ? "Active" : "PassThrough"
  }

  # The log group exists (with its retention) before the function first logs.
  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]

  lifecycle {
    precondition {
      condition     = each.value.profile == "release" || var.accept_watch_builds
      error_message = "${each.key} is a `cargo xtask dev --watch` build (profile ${each.value.profile}), which only the local stack runs: build it for release with `cargo xtask build ${each.key}` first."
    }
  }
}

# `staging` follows every new upload; `prod` serves a published version.
resource "aws_lambda_alias" "staging" {
  for_each = aws_lambda_function.this

  name             = "staging"
  function_name    = each.value.function_name
  function_version = "$LATEST"
}

# During a canary the pin names a new version for some functions: their
# prod alias sends that share of invocations to it (Lambda's weighted
# alias), the rest to `function_version`.
locals {
  canary         = var.prod_release.canary == null ? {} : var.prod_release.canary.versions
  canary_percent = var.prod_release.canary == null ? 0 : var.prod_release.canary.percent
}

resource "aws_lambda_alias" "prod" {
  for_each = var.prod_release.functions

  name             = "prod"
  function_name    = aws_lambda_function.this[each.key].function_name
  function_version = each.value

  dynamic "routing_config" {
    for_each = contains(keys(local.canary), each.key) ? [local.canary[each.key]] : []

    content {
      additional_version_weights = { (routing_config.value) = local.canary_percent / 100 }
    }
  }
}

# Each alias may be invoked by its own stage of this API (the alias and stage
# names agree), and nothing else. Keyed like a qualified name: "users:prod".
locals {
  aliases = merge(
    { for function, alias in aws_lambda_alias.staging : "${function}:staging" => alias },
    { for function, alias in aws_lambda_alias.prod : "${function}:prod" => alias },
  )
}

resource "aws_lambda_permission" "this" {
  for_each = local.aliases

  statement_id  = "apigateway-${each.value.name}"
  action        = "lambda:InvokeFunction"
  function_name = each.value.function_name
  qualifier     = each.value.name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_api_gateway_rest_api.this.execution_arn}/${each.value.name}/*/*"
}
