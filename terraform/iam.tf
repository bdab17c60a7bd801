# One execution role for every function, allowed exactly what the code does:
# the item actions of `lambdas/users/src/dynamo.rs` on the two users tables
# (every write there is a conditional UpdateItem; a delete writes a tombstone),
# those of `lambdas/chirps/src/dynamo.rs` on the two chirps tables, those of
# `lambdas/files` on its tables and buckets, writing to the functions' own
# log groups, and sending X-Ray trace segments.
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "UsersItems"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [for table in aws_dynamodb_table.users : table.arn]
  }

  # lambdas/chirps/src/dynamo.rs: a chirp is saved by a TransactWriteItems
  # of a Put and an UpdateItem (ADD to the counter), which IAM authorizes as
  # those two actions; the feed is a Query, the count a GetItem.
  statement {
    sid = "ChirpsItems"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [for table in aws_dynamodb_table.chirps : table.arn]
  }

  # lambdas/files/src/dynamo.rs: a conditional PutItem creates a record, a
  # GetItem reads it, a conditional DeleteItem removes it.
  statement {
    sid       = "FilesItems"
    actions   = ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [for table in aws_dynamodb_table.files : table.arn]
  }

  # lambdas/files/src/s3.rs: a presigned URL acts with the permissions of
  # whoever signed it, so uploads and downloads need PutObject and GetObject
  # (HeadObject, "is it uploaded yet", is authorized as GetObject too); a
  # delete is DeleteObject. Objects of the function's own buckets only.
  statement {
    sid       = "FilesObjects"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = [for bucket in aws_s3_bucket.files : "${bucket.arn}/*"]
  }

  # The one bucket-level grant: without ListBucket, S3 answers HeadObject of
  # an object that does not exist with 403, not 404, and the function could
  # not tell "not uploaded yet" (409) from being refused (500). It lists
  # keys that are random ids, nothing else.
  statement {
    sid       = "FilesUploadedYet"
    actions   = ["s3:ListBucket"]
    resources = [for bucket in aws_s3_bucket.files : bucket.arn]
  }

  # X-Ray (var.tracing): the trace segments Lambda's active tracing sends.
  # X-Ray's actions take no resource ("*" is the only one IAM accepts).
  statement {
    sid       = "Traces"
    actions   = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    resources = ["*"]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.this : "${group.arn}:*"]
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.name}-lambda"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}
