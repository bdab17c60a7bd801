# Who may release this stack: the deployer's IAM policy (every action that
# `cargo xtask apply`, `plan`, `verify`, `publish`, `rollback`, `status`,
# `apikey` and `destroy` need on AWS, scoped to this stack's names), a
# read-only variant for `plan` and `status` on pull requests, and the roles
# GitHub Actions assumes through its OIDC provider. Applied once per
# account by `cargo xtask deployer --aws --repository OWNER/REPO` (or
# `terraform -chdir=terraform/deployer apply`), with an administrator's
# credentials; its own state is local, in this directory (ignored by git),
# as the state bucket's is.
#
# The actions are those a run of the whole release flow asks for
# (`XTASK_MOTO_ACTION_LOG` in xtask/src/serve_moto.py lists what the
# emulator judges; xtask/tests/aws.rs runs the flow with this policy and
# nothing else), plus what AWS checks and the emulator does not: passing
# the functions' role, tagging on create (the provider's default_tags), and
# the S3 bucket settings the provider reads.

terraform {
  required_version = "~> 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "= 5.100.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project = var.name
    }
  }
}

variable "name" {
  description = "The stack's name prefix (terraform/'s `name`): every function, table, bucket, role and log group of the stack starts with it."
  type        = string
  default     = "rust-lambda-api"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the stack (terraform/'s `region`)."
  type        = string
  default     = "us-east-1"
}

variable "state_bucket" {
  description = "The state bucket terraform/state.s3.tfbackend names; null for bootstrap's default, `<name>-tfstate-<account id>`."
  type        = string
  default     = null
}

variable "state_key" {
  description = "The state's key in the bucket (terraform/state.s3.tfbackend's `key`); null for `<name>/terraform.tfstate`."
  type        = string
  default     = null
}

variable "github_repository" {
  description = "The GitHub repository (`OWNER/REPO`) whose workflows may assume the roles; null: the policies only, no OIDC provider or roles."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository: OWNER/REPO, as in the repository's URL."
  }
}

variable "hosted_zone_id" {
  description = "The Route 53 hosted zone of terraform/'s `domain`, if the stack has a custom domain: the deployer may change that zone's records, and manage the certificate and the API's domain names; null for none."
  type        = string
  default     = null
}

variable "production_environment" {
  description = "The GitHub environment (with required reviewers) whose jobs may publish and roll back."
  type        = string
  default     = "production"
}

variable "create_oidc_provider" {
  description = "Create GitHub's OIDC provider in this account; false where the account already has one (there is one per URL)."
  type        = bool
  default     = true
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  arn       = "arn:${local.partition}"
  region    = var.region
  bucket    = coalesce(var.state_bucket, "${var.name}-tfstate-${local.account}")
  state_key = coalesce(var.state_key, "${var.name}/terraform.tfstate")

  functions  = "${local.arn}:lambda:${local.region}:${local.account}:function:${var.name}-*"
  tables     = "${local.arn}:dynamodb:${local.region}:${local.account}:table/${var.name}-*"
  log_groups = "${local.arn}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name}-*"
  # The stages' access logs (terraform/logs.tf).
  access_logs = "${local.arn}:logs:${local.region}:${local.account}:log-group:/aws/apigateway/${var.name}/*"
  # The alarms and the SNS topic they notify (terraform/alarms.tf).
  alarms = "${local.arn}:cloudwatch:${local.region}:${local.account}:alarm:${var.name}-*"
  topic  = "${local.arn}:sns:${local.region}:${local.account}:${var.name}-alarms"
  # API Gateway's CloudWatch role (terraform/logs.tf), and the one managed
  # policy it holds.
  apigateway_role   = "${local.arn}:iam::${local.account}:role/${var.name}-apigateway-logs"
  apigateway_policy = "${local.arn}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
  # Exactly the functions' role (terraform/iam.tf): never the deployer's
  # own roles, which share the prefix, nor a new one.
  function_role = "${local.arn}:iam::${local.account}:role/${var.name}-lambda"
  files         = "${local.arn}:s3:::${var.name}-files-*"
  # API Gateway's ARNs carry the API's id, made at create: the stack's APIs,
  # keys and usage plans are reachable only as this region's.
  apigateway = "${local.arn}:apigateway:${local.region}::"
  api_paths = concat(
    ["/restapis", "/restapis/*", "/apikeys", "/apikeys/*", "/usageplans", "/usageplans/*", "/tags/*", "/account"],
    var.hosted_zone_id == null ? [] : ["/domainnames", "/domainnames/*"],
  )
  domain = var.hosted_zone_id == null ? [] : [var.hosted_zone_id]

  # What the provider reads of an S3 bucket on every refresh, for each of
  # the bucket's settings (and what the files buckets' resources set).
  bucket_reads = [
    "s3:GetAccelerateConfiguration",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketLogging",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketRequestPayment",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketWebsite",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetReplicationConfiguration",
    "s3:ListBucket",
  ]
}

# The release flow: apply (and the plan before it), verify, publish,
# rollback, status, apikey, destroy.
data "aws_iam_policy_document" "deployer" {
  statement {
    sid = "Functions"
    actions = [
      "lambda:AddPermission",
      "lambda:CreateAlias",
      "lambda:CreateFunction",
      "lambda:DeleteAlias",
      "lambda:DeleteFunction",
      "lambda:DeleteFunctionConcurrency",
      "lambda:GetAlias",
      "lambda:GetFunction",
      "lambda:GetFunctionCodeSigningConfig",
      "lambda:GetFunctionConcurrency",
      "lambda:GetFunctionConfiguration",
      "lambda:GetPolicy",
      "lambda:ListAliases",
      "lambda:ListTags",
      "lambda:ListVersionsByFunction",
      "lambda:PublishVersion",
      "lambda:PutFunctionConcurrency",
      "lambda:RemovePermission",
      "lambda:TagResource",
      "lambda:UntagResource",
      "lambda:UpdateAlias",
      "lambda:UpdateFunctionCode",
      "lambda:UpdateFunctionConfiguration",
    ]
    resources = [local.functions, "${local.functions}:*"]
  }

  # The functions' execution role: made and changed by Terraform, handed
  # to Lambda only.
  statement {
    sid = "FunctionRole"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRole",
      "iam:DeleteRolePolicy",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
      "iam:ListRolePolicies",
      "iam:PutRolePolicy",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy",
    ]
    resources = [local.function_role]
  }

  statement {
    sid       = "PassFunctionRole"
    actions   = ["iam:PassRole"]
    resources = [local.function_role]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["lambda.amazonaws.com"]
    }
  }

  statement {
    sid = "LogGroups"
    actions = [
      "logs:CreateLogGroup",
      "logs:DeleteLogGroup",
      "logs:DeleteRetentionPolicy",
      "logs:ListTagsForResource",
      "logs:ListTagsLogGroup",
      "logs:PutRetentionPolicy",
      "logs:TagLogGroup",
      "logs:TagResource",
      "logs:UntagLogGroup",
      "logs:UntagResource",
    ]
    resources = [local.log_groups, "${local.log_groups}:*", local.access_logs, "${local.access_logs}:*"]
  }

  # `cargo xtask logs`: the functions' log lines.
  statement {
    sid       = "ReadLogs"
    actions   = ["logs:DescribeLogStreams", "logs:FilterLogEvents"]
    resources = [local.log_groups, "${local.log_groups}:*"]
  }

  # The alarms (and their tags), which a canary reads.
  statement {
    sid = "Alarms"
    actions = [
      "cloudwatch:DeleteAlarms",
      "cloudwatch:DescribeAlarms",
      "cloudwatch:ListTagsForResource",
      "cloudwatch:PutMetricAlarm",
      "cloudwatch:TagResource",
      "cloudwatch:UntagResource",
    ]
    resources = [local.alarms]
  }

  # A canary's progress: what each version served (GetMetricData names no
  # resource: IAM authorizes it on "*").
  statement {
    sid       = "ReadMetrics"
    actions   = ["cloudwatch:GetMetricData"]
    resources = ["*"]
  }

  statement {
    sid = "AlarmTopic"
    actions = [
      "sns:CreateTopic",
      "sns:DeleteTopic",
      "sns:GetTopicAttributes",
      "sns:ListTagsForResource",
      "sns:SetTopicAttributes",
      "sns:Subscribe",
      "sns:TagResource",
      "sns:UntagResource",
    ]
    resources = [local.topic]
  }

  # The topic's email subscriptions (var.alarm_emails): SNS authorizes
  # reading and removing a subscription on no resource ("*" only).
  statement {
    sid       = "AlarmSubscriptions"
    actions   = ["sns:GetSubscriptionAttributes", "sns:Unsubscribe"]
    resources = ["*"]
  }

  # API Gateway's CloudWatch role: made by Terraform with exactly AWS's
  # managed logging policy, handed to API Gateway only.
  statement {
    sid = "ApiGatewayLogsRole"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRole",
      "iam:GetRole",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
      "iam:ListRolePolicies",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy",
    ]
    resources = [local.apigateway_role]
  }

  statement {
    sid       = "ApiGatewayLogsPolicy"
    actions   = ["iam:AttachRolePolicy", "iam:DetachRolePolicy"]
    resources = [local.apigateway_role]

    condition {
      test     = "ArnEquals"
      variable = "iam:PolicyARN"
      values   = [local.apigateway_policy]
    }
  }

  statement {
    sid       = "PassApiGatewayLogsRole"
    actions   = ["iam:PassRole"]
    resources = [local.apigateway_role]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["apigateway.amazonaws.com"]
    }
  }

  # DescribeLogGroups names no resource (IAM authorizes it on "*"): it
  # lists log groups' names and settings, nothing in them.
  statement {
    sid       = "FindLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"]
  }

  # Scan: destroy's check for items before it drops a table (one item).
  statement {
    sid = "Tables"
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:DeleteTable",
      "dynamodb:DescribeContinuousBackups",
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:ListTagsOfResource",
      "dynamodb:Scan",
      "dynamodb:TagResource",
      "dynamodb:UntagResource",
      "dynamodb:UpdateContinuousBackups",
      "dynamodb:UpdateTable",
      "dynamodb:UpdateTimeToLive",
    ]
    resources = [local.tables]
  }

  statement {
    sid = "FilesBuckets"
    actions = concat(local.bucket_reads, [
      "s3:CreateBucket",
      "s3:DeleteBucket",
      "s3:PutBucketPublicAccessBlock",
      "s3:PutBucketTagging",
      "s3:PutEncryptionConfiguration",
      "s3:PutLifecycleConfiguration",
    ])
    resources = [local.files]
  }

  # destroy --delete-data empties the files buckets first.
  statement {
    sid       = "EmptyFilesBuckets"
    actions   = ["s3:DeleteObject"]
    resources = ["${local.files}/*"]
  }

  # The API, its resources, methods, integrations, deployments and stages,
  # the API keys and usage plans (and their tags): API Gateway authorizes
  # by HTTP method on the resource's path.
  statement {
    sid       = "Api"
    actions   = ["apigateway:DELETE", "apigateway:GET", "apigateway:PATCH", "apigateway:POST", "apigateway:PUT"]
    resources = [for path in local.api_paths : "${local.apigateway}${path}"]
  }

  # The custom domain (terraform/domain.tf), when there is one: its
  # certificate (RequestCertificate names no resource), the zone's records.
  dynamic "statement" {
    for_each = local.domain
    content {
      sid       = "RequestCertificate"
      actions   = ["acm:RequestCertificate"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.domain
    content {
      sid = "Certificate"
      actions = [
        "acm:AddTagsToCertificate",
        "acm:DeleteCertificate",
        "acm:DescribeCertificate",
        "acm:ListTagsForCertificate",
      ]
      resources = ["${local.arn}:acm:${local.region}:${local.account}:certificate/*"]
    }
  }

  dynamic "statement" {
    for_each = local.domain
    content {
      sid = "Zone"
      actions = [
        "route53:ChangeResourceRecordSets",
        "route53:GetHostedZone",
        "route53:ListResourceRecordSets",
      ]
      resources = ["${local.arn}:route53:::hostedzone/${statement.value}"]
    }
  }

  # A regional domain name needs API Gateway's service-linked role, which
  # the first one in an account creates with the caller's rights.
  dynamic "statement" {
    for_each = local.domain
    content {
      sid       = "ApiGatewayServiceRole"
      actions   = ["iam:CreateServiceLinkedRole"]
      resources = ["${local.arn}:iam::${local.account}:role/aws-service-role/ops.apigateway.amazonaws.com/*"]

      condition {
        test     = "StringEquals"
        variable = "iam:AWSServiceName"
        values   = ["ops.apigateway.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.domain
    content {
      sid       = "ZoneChanges"
      actions   = ["route53:GetChange"]
      resources = ["${local.arn}:route53:::change/*"]
    }
  }

  statement {
    sid       = "StateBucket"
    actions   = ["s3:ListBucket"]
    resources = ["${local.arn}:s3:::${local.bucket}"]
  }

  statement {
    sid       = "State"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.arn}:s3:::${local.bucket}/${local.state_key}"]
  }

  statement {
    sid       = "StateLock"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = ["${local.arn}:s3:::${local.bucket}/${local.state_key}.tflock"]
  }
}

# `plan` (with -lock=false: it takes no lock) and `status`: reads only.
data "aws_iam_policy_document" "readonly" {
  statement {
    sid = "Functions"
    actions = [
      "lambda:GetAlias",
      "lambda:GetFunction",
      "lambda:GetFunctionCodeSigningConfig",
      "lambda:GetFunctionConcurrency",
      "lambda:GetFunctionConfiguration",
      "lambda:GetPolicy",
      "lambda:ListAliases",
      "lambda:ListTags",
      "lambda:ListVersionsByFunction",
    ]
    resources = [local.functions, "${local.functions}:*"]
  }

  statement {
    sid = "FunctionRole"
    actions = [
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies",
      "iam:ListRolePolicies",
    ]
    resources = [local.function_role]
  }

  statement {
    sid       = "LogGroups"
    actions   = ["logs:ListTagsForResource", "logs:ListTagsLogGroup"]
    resources = [local.log_groups, "${local.log_groups}:*", local.access_logs, "${local.access_logs}:*"]
  }

  statement {
    sid       = "Alarms"
    actions   = ["cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource"]
    resources = [local.alarms]
  }

  statement {
    sid       = "AlarmTopic"
    actions   = ["sns:GetTopicAttributes", "sns:ListTagsForResource"]
    resources = [local.topic]
  }

  statement {
    sid       = "AlarmSubscriptions"
    actions   = ["sns:GetSubscriptionAttributes"]
    resources = ["*"]
  }

  statement {
    sid = "ApiGatewayLogsRole"
    actions = [
      "iam:GetRole",
      "iam:ListAttachedRolePolicies",
      "iam:ListRolePolicies",
    ]
    resources = [local.apigateway_role]
  }

  statement {
    sid       = "FindLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"]
  }

  statement {
    sid = "Tables"
    actions = [
      "dynamodb:DescribeContinuousBackups",
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:ListTagsOfResource",
    ]
    resources = [local.tables]
  }

  statement {
    sid       = "FilesBuckets"
    actions   = local.bucket_reads
    resources = [local.files]
  }

  statement {
    sid       = "Api"
    actions   = ["apigateway:GET"]
    resources = [for path in local.api_paths : "${local.apigateway}${path}"]
  }

  dynamic "statement" {
    for_each = local.domain
    content {
      sid       = "Certificate"
      actions   = ["acm:DescribeCertificate", "acm:ListTagsForCertificate"]
      resources = ["${local.arn}:acm:${local.region}:${local.account}:certificate/*"]
    }
  }

  dynamic "statement" {
    for_each = local.domain
    content {
      sid       = "Zone"
      actions   = ["route53:GetHostedZone", "route53:ListResourceRecordSets"]
      resources = ["${local.arn}:route53:::hostedzone/${statement.value}"]
    }
  }

  statement {
    sid       = "StateBucket"
    actions   = ["s3:ListBucket"]
    resources = ["${local.arn}:s3:::${local.bucket}"]
  }

  statement {
    sid       = "State"
    actions   = ["s3:GetObject"]
    resources = ["${local.arn}:s3:::${local.bucket}/${local.state_key}"]
  }
}

resource "aws_iam_policy" "deployer" {
  name        = "${var.name}-deployer"
  description = "Release ${var.name}: apply, verify, publish, rollback, status, destroy."
  policy      = data.aws_iam_policy_document.deployer.json
}

resource "aws_iam_policy" "readonly" {
  name        = "${var.name}-readonly"
  description = "Read ${var.name}: plan (without a lock) and status."
  policy      = data.aws_iam_policy_document.readonly.json
}

# GitHub Actions' OIDC provider and the two roles its workflows assume.
locals {
  github = var.github_repository != null
}

resource "aws_iam_openid_connect_provider" "github" {
  count = local.github && var.create_oidc_provider ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # AWS trusts GitHub's certificate authority itself; the provider still
  # wants a thumbprint.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1"]
}

locals {
  oidc_provider = local.github ? (
    var.create_oidc_provider
    ? aws_iam_openid_connect_provider.github[0].arn
    : "${local.arn}:iam::${local.account}:oidc-provider/token.actions.githubusercontent.com"
  ) : null
}

# Who assumes which role: main's workflow runs (apply, verify) and the
# production environment's jobs (publish, rollback) the deployer; pull
# requests' plan the read-only one.
locals {
  github_roles = local.github ? {
    deployer = {
      policy = aws_iam_policy.deployer.arn
      subjects = [
        "repo:${var.github_repository}:ref:refs/heads/main",
        "repo:${var.github_repository}:environment:${var.production_environment}",
      ]
    }
    readonly = {
      policy   = aws_iam_policy.readonly.arn
      subjects = ["repo:${var.github_repository}:pull_request"]
    }
  } : {}
}

data "aws_iam_policy_document" "trust" {
  for_each = local.github_roles

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = each.value.subjects
    }
  }
}

resource "aws_iam_role" "github" {
  for_each = local.github_roles

  name                 = "${var.name}-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy_attachment" "github" {
  for_each = local.github_roles

  role       = aws_iam_role.github[each.key].name
  policy_arn = each.value.policy
}

output "deployer_policy_arn" {
  description = "The deployer policy: attach it to whoever releases by hand."
  value       = aws_iam_policy.deployer.arn
}

output "deployer_policy" {
  description = "The deployer policy's document."
  value       = data.aws_iam_policy_document.deployer.json
}

output "readonly_policy" {
  description = "The read-only policy's document."
  value       = data.aws_iam_policy_document.readonly.json
}

output "deployer_role_arn" {
  description = "For the repository variable AWS_DEPLOYER_ROLE_ARN (null without github_repository)."
  value       = local.github ? aws_iam_role.github["deployer"].arn : null
}

output "readonly_role_arn" {
  description = "For the repository variable AWS_READONLY_ROLE_ARN (null without github_repository)."
  value       = local.github ? aws_iam_role.github["readonly"].arn : null
}
