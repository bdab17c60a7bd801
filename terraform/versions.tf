terraform {
  # Pinned to the minor release this configuration is tested with.
  required_version = "~> 1.11.0"

  # On AWS, the state lives in S3, locked by a lock file beside it: the
  # settings are in state.s3.tfbackend, which `cargo xtask bootstrap --aws`
  # writes (`terraform init -backend-config=state.s3.tfbackend`). The local
  # stack's override declares a local backend instead.
  backend "s3" {}

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
