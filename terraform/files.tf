# The files function's storage (lambdas/files): per stage, a table of
# records (FILES_TABLE_STAGING, FILES_TABLE_PROD) and a private bucket of
# objects (FILES_BUCKET_STAGING, FILES_BUCKET_PROD). Clients never reach a
# bucket but through the presigned URLs the function hands out, each for
# one object whose key is the record's random id (never the file's name).
data "aws_caller_identity" "current" {}

resource "aws_dynamodb_table" "files" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with DynamoDB's AWS-owned key; a customer-managed KMS key is an account decision
  for_each = local.stages

  name         = "${var.name}-files-${each.key}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = each.key == "prod"
  }

  # Prod's data outlives a careless destroy: `cargo xtask destroy
  # --delete-data` lifts this first (var.prod_deletion_protection).
  deletion_protection_enabled = each.key == "prod" && var.prod_deletion_protection
}

resource "aws_s3_bucket" "files" {
  #checkov:skip=CKV2_AWS_6:false positive: aws_s3_bucket_public_access_block.files blocks all public access on both stages' buckets
  #checkov:skip=CKV2_AWS_61:false positive: aws_s3_bucket_lifecycle_configuration.files covers both stages' buckets
  #checkov:skip=CKV2_AWS_62:nothing consumes object events: the files function checks an upload with HeadObject
  #checkov:skip=CKV_AWS_144:one region's per-stage files; replication would need versioning and a second bucket
  #checkov:skip=CKV_AWS_145:SSE-S3 is on, so a presigned URL needs no KMS grant; a customer-managed key is an account decision
  #checkov:skip=CKV_AWS_18:no log bucket in this stack; objects are reached only by presigned URLs from the files function, whose invocations are logged
  #checkov:skip=CKV_AWS_21:unversioned by design: DELETE /files/{id} removes the bytes, and destroy --delete-data empties it with plain deletes
  for_each = local.stages

  # Bucket names are global: the account id keeps two accounts' apart.
  bucket = "${var.name}-files-${each.key}-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_public_access_block" "files" {
  for_each = aws_s3_bucket.files

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "files" {
  for_each = aws_s3_bucket.files

  bucket = each.value.id

  rule {
    # SSE-S3: a presigned URL needs no KMS permissions of its own.
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# An upload abandoned half way (a multipart upload never completed) is
# cleaned up after a day; nothing else expires.
resource "aws_s3_bucket_lifecycle_configuration" "files" {
  for_each = aws_s3_bucket.files

  bucket = each.value.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
