variable "project_id" {
  description = "Google Cloud project ID that holds the cluster (6-30 chars: lowercase letters, digits, hyphens)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project ID (6-30 characters, lowercase letters, digits and hyphens, starting with a letter)."
  }
}

variable "region" {
  description = "Region of the regional cluster, e.g. us-central1. Pick one where gpu_type is offered."
  type        = string
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like us-central1 or europe-west4."
  }
}

variable "node_locations" {
  description = "Zones (inside region) for the node pools. GPUs exist only in some zones: check `gcloud compute accelerator-types list --filter=name=<gpu_type>`."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b"]
  validation {
    condition     = length(var.node_locations) > 0 && alltrue([for z in var.node_locations : can(regex("^[a-z]+-[a-z]+[0-9]-[a-z]$", z))])
    error_message = "node_locations must be a non-empty list of zones such as us-central1-a."
  }
}

variable "cluster_name" {
  description = "Name of the GKE cluster (lowercase letters, digits, hyphens; at most 40 characters)."
  type        = string
  default     = "facesr"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 2-40 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "release_channel" {
  description = "GKE release channel that chooses and upgrades the Kubernetes version (manifests are validated against 1.34)."
  type        = string
  default     = "REGULAR"
  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "subnet_cidr" {
  description = "Primary IPv4 range of the cluster subnet (nodes)."
  type        = string
  default     = "10.10.0.0/20"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "pods_cidr" {
  description = "Secondary range for pods."
  type        = string
  default     = "10.20.0.0/14"
  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be an IPv4 CIDR block."
  }
}

variable "services_cidr" {
  description = "Secondary range for services."
  type        = string
  default     = "10.30.0.0/20"
  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be an IPv4 CIDR block."
  }
}

variable "master_cidr" {
  description = "/28 range for the private control plane endpoint."
  type        = string
  default     = "172.16.0.0/28"
  validation {
    condition     = can(cidrhost(var.master_cidr, 0)) && endswith(var.master_cidr, "/28")
    error_message = "master_cidr must be an IPv4 /28 block."
  }
}

variable "master_authorized_cidrs" {
  description = "CIDR blocks allowed to reach the Kubernetes API (your office/VPN/CI egress). Never 0.0.0.0/0."
  type        = list(string)
  validation {
    condition     = length(var.master_authorized_cidrs) > 0 && alltrue([for c in var.master_authorized_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "master_authorized_cidrs must be a non-empty list of CIDR blocks, and 0.0.0.0/0 is not allowed."
  }
}

variable "system_machine_type" {
  description = "Machine type of the system pool (MLflow, PostgreSQL, KFP control plane)."
  type        = string
  default     = "e2-standard-4"
}

variable "system_min_nodes" {
  description = "Minimum nodes per zone in the system pool."
  type        = number
  default     = 1
  validation {
    condition     = var.system_min_nodes >= 1
    error_message = "system_min_nodes must be at least 1 (KFP and MLflow need somewhere to run)."
  }
}

variable "system_max_nodes" {
  description = "Maximum nodes per zone in the system pool."
  type        = number
  default     = 3
  validation {
    condition     = var.system_max_nodes >= 1 && var.system_max_nodes <= 20
    error_message = "system_max_nodes must be between 1 and 20."
  }
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU pool. Must fit the training task's request (params.yaml pipeline.gpu: 8 CPU, 32G) after system reservations: g2-standard-16 for nvidia-l4, a2-highgpu-1g for nvidia-tesla-a100."
  type        = string
  default     = "g2-standard-16"
  validation {
    condition     = can(regex("^(g2|a2|a3|n1)-[a-z]+-[0-9]+g?$", var.gpu_machine_type))
    error_message = "gpu_machine_type must be a GPU-capable family: g2-*, a2-*, a3-* or n1-* (n1 takes T4/V100/P100)."
  }
}

variable "gpu_type" {
  description = "Accelerator type. GKE labels GPU nodes cloud.google.com/gke-accelerator=<gpu_type>; must equal params.yaml pipeline.gpu.accelerator_type."
  type        = string
  default     = "nvidia-l4"
  validation {
    condition     = contains(["nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-h100-80gb"], var.gpu_type)
    error_message = "gpu_type must be one of nvidia-l4, nvidia-tesla-t4, nvidia-tesla-v100, nvidia-tesla-a100, nvidia-a100-80gb, nvidia-h100-80gb."
  }
}

variable "gpu_count" {
  description = "GPUs per node (params.yaml pipeline.gpu.count asks for this many per training task)."
  type        = number
  default     = 1
  validation {
    condition     = contains([1, 2, 4, 8], var.gpu_count)
    error_message = "gpu_count must be 1, 2, 4 or 8."
  }
}

variable "gpu_min_nodes" {
  description = "Minimum GPU nodes in the whole pool. 0 = scale to zero between training runs (no GPU cost when idle)."
  type        = number
  default     = 0
  validation {
    condition     = var.gpu_min_nodes >= 0
    error_message = "gpu_min_nodes must be 0 or more."
  }
}

variable "gpu_max_nodes" {
  description = "Maximum GPU nodes in the whole pool (the two loss variants train in parallel: 2 lets both run at once)."
  type        = number
  default     = 2
  validation {
    condition     = var.gpu_max_nodes >= 1 && var.gpu_max_nodes <= 16
    error_message = "gpu_max_nodes must be between 1 and 16."
  }
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool (60-90% cheaper, can be preempted; training resumes from its checkpoint on retry)."
  type        = bool
  default     = false
}

variable "gpu_driver_version" {
  description = "How GKE installs the NVIDIA driver on GPU nodes: DEFAULT or LATEST (GKE-managed driver and device plugin), or INSTALLATION_DISABLED (install the NVIDIA GPU Operator yourself, see docs/deploy.md)."
  type        = string
  default     = "DEFAULT"
  validation {
    condition     = contains(["DEFAULT", "LATEST", "INSTALLATION_DISABLED"], var.gpu_driver_version)
    error_message = "gpu_driver_version must be DEFAULT, LATEST or INSTALLATION_DISABLED."
  }
}

variable "gpu_pool_labels" {
  description = "Kubernetes labels on GPU nodes. The pipeline's node selector (params.yaml pipeline.gpu.node_selector) must be a subset."
  type        = map(string)
  default = {
    "facesr.io/pool" = "gpu"
  }
  validation {
    condition     = lookup(var.gpu_pool_labels, "facesr.io/pool", "") == "gpu"
    error_message = "gpu_pool_labels must keep facesr.io/pool=gpu: the training tasks select nodes by it."
  }
}

variable "gpu_disk_size_gb" {
  description = "Boot disk of GPU nodes (GB); the CUDA training image is large."
  type        = number
  default     = 200
  validation {
    condition     = var.gpu_disk_size_gb >= 100
    error_message = "gpu_disk_size_gb must be at least 100."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster. Set false only for throwaway clusters."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Resource labels on the cluster and nodes (cost attribution)."
  type        = map(string)
  default = {
    app = "facesr"
  }
}
