# The S3 bucket that holds terraform/'s state on AWS, created once per
# account by `cargo xtask bootstrap --aws` (or `terraform -chdir=
# terraform/bootstrap apply`). Its own state is local (this directory's
# terraform.tfstate, ignored by git): it is one bucket, and `terraform
# import aws_s3_bucket.state NAME` recovers it on another machine.
#
# Terraform locks the state with a lock file beside it in this bucket
# (`use_lockfile`, S3 conditional writes): no DynamoDB table.

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
  description = "The stack's name prefix (terraform/'s `name`): the state bucket is `<name>-tfstate-<account id>` unless `bucket` is set."
  type        = string
  default     = "rust-lambda-api"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the state bucket."
  type        = string
  default     = "us-east-1"
}

variable "bucket" {
  description = "Name of the state bucket; null for `<name>-tfstate-<account id>`."
  type        = string
  default     = null

  validation {
    condition     = var.bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "bucket: 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced state version is kept (every apply writes one) before it expires."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days: at least 1."
  }
}

data "aws_caller_identity" "current" {}

locals {
  bucket = coalesce(var.bucket, "${var.name}-tfstate-${data.aws_caller_identity.current.account_id}")
}

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV2_AWS_62:nothing consumes events of the state objects
  #checkov:skip=CKV_AWS_144:versioned (replaced states kept 90 days); a replica in a second region is an account decision
  #checkov:skip=CKV_AWS_145:SSE-S3 is on; a customer-managed KMS key is an account decision (every plan would then need kms:Decrypt)
  #checkov:skip=CKV_AWS_18:access logs need a log bucket of their own, beyond this one-bucket root; CloudTrail data events are the account-wide option
  bucket = local.bucket

  # The state of every stack in this account: never deleted by Terraform.
  lifecycle {
    prevent_destroy = true
  }
}

# Every apply keeps the state it replaced: a bad apply or a lost file is
# recovered from the previous version.
resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket = aws_s3_bucket.state.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Objects belong to the bucket's account; ACLs are off.
resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "expire-replaced-state"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    # Every lock leaves a delete marker once its versions expire.
    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

# State holds secrets (API key values, for one): TLS only.
data "aws_iam_policy_document" "state" {
  statement {
    sid     = "RefuseInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.state.arn,
      "${aws_s3_bucket.state.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state.json

  depends_on = [aws_s3_bucket_public_access_block.state]
}

output "bucket" {
  description = "The state bucket (known at plan time: bootstrap checks it before applying)."
  value       = aws_s3_bucket.state.bucket
}

output "region" {
  description = "The state bucket's region."
  value       = var.region
}
