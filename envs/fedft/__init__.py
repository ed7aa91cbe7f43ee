"""edgelam/FedFTAllocation-v0 and edgelam/FedFTPower-v0: federated LoRA fine-tuning over a shared uplink."""
