"""Shared physics of edgelam: channel, hardware and roofline costs, queues, scenario configs."""
