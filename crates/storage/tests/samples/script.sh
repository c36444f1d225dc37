#!/bin/sh
echo "not a text file"
